"""The environment record that travels with every latency figure.

Everything is read from /proc and /sys where present and left ``None`` where
not (macOS, containers, boards without cpufreq). Runtime versions come from
package metadata, so recording them never imports a heavy runtime.
"""

from __future__ import annotations

import glob
import os
import platform
import socket
import sys
from pathlib import Path
from typing import Dict, Optional

#: ARM "CPU part" codes (/proc/cpuinfo) of the cores found on our targets.
_ARM_PARTS = {
    ("0x41", "0xd03"): "Cortex-A53",
    ("0x41", "0xd04"): "Cortex-A35",
    ("0x41", "0xd05"): "Cortex-A55",
    ("0x41", "0xd07"): "Cortex-A57",
    ("0x41", "0xd08"): "Cortex-A72",
    ("0x41", "0xd09"): "Cortex-A73",
    ("0x41", "0xd0a"): "Cortex-A75",
    ("0x41", "0xd0b"): "Cortex-A76",
    ("0x41", "0xd0c"): "Neoverse-N1",
    ("0x41", "0xd0d"): "Cortex-A77",
    ("0x41", "0xd41"): "Cortex-A78",
    ("0x41", "0xd42"): "Cortex-A78AE",
    ("0x41", "0xd4b"): "Cortex-A78C",
    ("0x4e", "0x004"): "NVIDIA Carmel",
}

#: distribution names of the runtimes whose versions we record.
_RUNTIME_DISTS = {
    "numpy": ("numpy",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
    "tvm": ("apache-tvm", "tlcpack", "tvm"),
    "tensorrt": ("tensorrt", "tensorrt-cu12", "tensorrt-cu11"),
}


def _read(path: str) -> Optional[str]:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace").strip("\x00\n ")
    except OSError:
        return None


def _cpuinfo_fields(text: str) -> Dict[str, str]:
    """First value of each key in /proc/cpuinfo."""
    fields: Dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    return fields


def cpu_model(cpuinfo: Optional[str] = None, board: Optional[str] = None) -> Optional[str]:
    """A readable CPU name: x86 "model name", or the ARM core plus the board model."""
    fields = _cpuinfo_fields(cpuinfo if cpuinfo is not None else (_read("/proc/cpuinfo") or ""))
    board = board if board is not None else _read("/proc/device-tree/model")
    name = fields.get("model name") or fields.get("Processor")
    if not name and "CPU part" in fields:
        key = (fields.get("CPU implementer", "").lower(), fields["CPU part"].lower())
        name = _ARM_PARTS.get(key, f"ARM implementer {key[0]} part {key[1]}")
    name = name or fields.get("Hardware") or platform.processor() or None
    if board:
        return f"{name} ({board})" if name else board
    return name


def is_emulated(cpuinfo: Optional[str] = None, machine: Optional[str] = None) -> bool:
    """True under our qemu-user emulator, where timings mean nothing.

    The emulator sets EDGEDISTILL_EMULATED=1. Without it, qemu-user still shows
    the host's /proc/cpuinfo: an ARM process that sees x86 CPU flags is emulated.
    """
    if os.environ.get("EDGEDISTILL_EMULATED", "") not in ("", "0"):
        return True
    machine = (machine or platform.machine()).lower()
    text = cpuinfo if cpuinfo is not None else (_read("/proc/cpuinfo") or "")
    fields = _cpuinfo_fields(text)
    x86_host = fields.get("vendor_id") in ("GenuineIntel", "AuthenticAMD")
    return machine in ("aarch64", "arm64", "armv7l") and x86_host


def governor() -> Optional[str]:
    return _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")


def temperature_c() -> Optional[float]:
    """Hottest thermal zone in degrees Celsius, where readable."""
    temps = []
    for zone in glob.glob("/sys/class/thermal/thermal_zone*/temp"):
        raw = _read(zone)
        if raw and raw.lstrip("-").isdigit():
            temps.append(int(raw) / 1000.0)
    return max(temps) if temps else None


def usable_cores() -> int:
    """Cores this process may run on (respects taskset/cgroups affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def runtime_versions() -> Dict[str, Optional[str]]:
    """Installed versions of numpy and the runtimes, without importing them."""
    from importlib import metadata

    versions: Dict[str, Optional[str]] = {}
    for name, dists in _RUNTIME_DISTS.items():
        versions[name] = None
        for dist in dists:
            try:
                versions[name] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
        module = sys.modules.get(name)
        if versions[name] is None and module is not None:
            versions[name] = getattr(module, "__version__", None)
    return versions


def environment_record(threads: int) -> Dict[str, object]:
    """The ``environment`` object of the edgedistill-bench/1 schema."""
    return {
        "hostname": socket.gethostname(),
        "machine": platform.machine(),
        "system": platform.system(),
        "cpu_model": cpu_model(),
        "cores": usable_cores(),
        "threads": threads,
        "governor": governor(),
        "temperature_c": temperature_c(),
        "python": platform.python_version(),
        "runtimes": runtime_versions(),
        "emulated": is_emulated(),
    }
