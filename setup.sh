#!/usr/bin/env bash
# Set up edgedistill on a fresh Debian/Ubuntu machine, into the current Python environment
# (activate a virtualenv first if you want one).
#
#   ./setup.sh            everything: system packages, torch, edgedistill with TVM and test extras,
#                         then 'edgedistill doctor' to show that each piece works
#
# Environment knobs:
#   TORCH_SPEC    the torch requirement to install when torch is missing
#                 (default: torch==2.13.0, a CPU build; use e.g. "torch" with a CUDA index for GPUs)
#   SKIP_APT=1    do not install Debian packages (no root, or not Debian)
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}

# Debian packages:
#   dataset-fashion-mnist  the offline default dataset (/usr/share/datasets/fashion-mnist)
#   g++                    TVM links every host library it compiles with the system C++ compiler
#   gcc-aarch64-linux-gnu  cross compiler for Raspberry Pi / Jetson TVM libraries
#   libc6-dev-arm64-cross  the aarch64 C runtime (crti.o, libc.so) that the cross compiler needs to
#                          link a shared library; only a *Recommends* of the compiler, so name it
#   qemu-user-static, debootstrap   the emulated ARM board used by the tests
APT_PACKAGES="dataset-fashion-mnist g++ gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static debootstrap"
if [[ "${SKIP_APT:-0}" != 1 ]] && command -v apt-get >/dev/null; then
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  echo "setup.sh: installing $APT_PACKAGES"
  $SUDO apt-get update -qq
  # dpkg's per-file chatter goes to a log; errors still reach stderr.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $APT_PACKAGES >"${TMPDIR:-/tmp}/edgedistill-apt.log" \
    || { tail -20 "${TMPDIR:-/tmp}/edgedistill-apt.log" >&2; exit 1; }
else
  echo "setup.sh: not installing Debian packages ($APT_PACKAGES)." >&2
  echo "  Without dataset-fashion-mnist, train with --data-dir DIR (the four IDX files) or --download." >&2
fi

if ! "$PYTHON" -c "import torch" 2>/dev/null; then
  "$PYTHON" -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
fi
"$PYTHON" -m pip install -q -e ".[tvm,dev]"
# Prove the install by using every piece (links an aarch64 library, compiles a model with TVM, ...):
# a table of what works and the command that fixes what does not. Fails only when the core is broken.
"$PYTHON" -m edgedistill.cli doctor
echo "setup.sh: done. Try: edgedistill demo"
