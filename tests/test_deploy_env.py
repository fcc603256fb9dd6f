"""deploy.env: the environment record and the pieces it is parsed from."""

from __future__ import annotations

import json
import platform

from deploy.env import cpu_model, environment_record, is_emulated, runtime_versions

RPI4_CPUINFO = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x0
CPU part\t: 0xd08
CPU revision\t: 3
"""
ORIN_CPUINFO = RPI4_CPUINFO.replace("0xd08", "0xd42")
X86_CPUINFO = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse avx2\n"


def test_record_has_the_schema_fields_and_is_json():
    record = environment_record(threads=3)
    for key in ("hostname", "machine", "cpu_model", "cores", "threads", "governor", "temperature_c", "python", "runtimes", "emulated"):
        assert key in record
    assert record["threads"] == 3
    assert record["machine"] == platform.machine()
    assert record["cores"] >= 1
    assert record["python"] == platform.python_version()
    json.dumps(record)


def test_runtime_versions_come_from_package_metadata():
    import numpy
    import onnxruntime

    versions = runtime_versions()
    assert versions["numpy"] == numpy.__version__
    assert versions["onnxruntime"] == onnxruntime.__version__


def test_arm_core_names_and_board_model():
    assert cpu_model(RPI4_CPUINFO, board="Raspberry Pi 4 Model B Rev 1.4") == "Cortex-A72 (Raspberry Pi 4 Model B Rev 1.4)"
    assert cpu_model(ORIN_CPUINFO, board="") == "Cortex-A78AE"
    assert "0xd99" in cpu_model(RPI4_CPUINFO.replace("0xd08", "0xd99"), board="")
    assert cpu_model(X86_CPUINFO, board="") == "AMD EPYC 7B13"


def test_emulation_is_detected_from_the_variable_or_from_host_cpuinfo(monkeypatch):
    monkeypatch.delenv("EDGEDISTILL_EMULATED", raising=False)
    assert is_emulated(X86_CPUINFO, machine="aarch64")  # qemu-user shows the x86 host's cpuinfo
    assert not is_emulated(RPI4_CPUINFO, machine="aarch64")
    assert not is_emulated(X86_CPUINFO, machine="x86_64")
    monkeypatch.setenv("EDGEDISTILL_EMULATED", "1")
    assert is_emulated(RPI4_CPUINFO, machine="aarch64")
    assert environment_record(1)["emulated"] is True
