#!/usr/bin/env bash
# An emulated arm64 board (Debian bookworm under qemu-aarch64-static) serving TVM RPC.
# Needs: apt-get install qemu-user-static debootstrap (root for the one-time build).
#
#   benchmarks/devices/arm64-emulated.sh build            # once; cached in ~/.cache/edgedistill/arm64-rootfs
#   python -m edgedistill.bench.rpc tracker --port 9190 &  # a local tracker (127.0.0.1)
#   benchmarks/devices/arm64-emulated.sh serve --tracker 127.0.0.1:9190 --key rpi4-emulated
#
# Outputs computed on it are real aarch64 results; its timings are emulated and mean nothing.
set -euo pipefail
exec "${PYTHON:-python3}" -m edgedistill.bench.emulated_board "$@"
