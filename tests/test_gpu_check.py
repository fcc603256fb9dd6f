"""benchmarks/gpu_check.py, the one-call GPU evidence script, on its CPU --quick path.

Runs the whole script in-process (its real CLI runs, torchrun included, are subprocesses) and checks
that every section left figures or a recorded reason: the GPU session runs it once, blind.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
DATA = Path("/usr/share/datasets/fashion-mnist")


@functools.cache
def _load() -> Any:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    if not DATA.is_dir():
        pytest.skip(f"Fashion-MNIST not at {DATA} (apt-get install dataset-fashion-mnist)")
    out = tmp_path_factory.mktemp("gpu-check")
    _load().main(["--device", "cpu", "--quick", "--threads", "1", "--data-dir", str(DATA), "--out", str(out)])
    return out, json.loads((out / "gpu-check.json").read_text())


def test_every_section_has_figures_or_a_reason(quick_run: tuple[Path, dict[str, Any]]) -> None:
    out, result = quick_run
    gpu_check = _load()
    sections = result["sections"]
    assert list(sections) == list(gpu_check.SECTION_NAMES)
    for name, entry in sections.items():
        assert entry["status"] in ("ok", "error", "skipped"), name
        if entry["status"] == "error":
            assert entry["error"], name
        if entry["status"] == "skipped":
            assert entry["reason"], name
    # On an idle CPU every section works; a failure here is a bug of the script, not of the GPU.
    assert {n: e.get("error") for n, e in sections.items() if e["status"] != "ok"} == {}
    text = (out / "gpu-check.md").read_text()
    assert "issue 12 checks" in text and "real CLI runs" in text


def test_throughput_grid_with_amp_skipped_on_cpu(quick_run: tuple[Path, dict[str, Any]]) -> None:
    tp = quick_run[1]["sections"]["throughput"]
    variants = tp["models"]["resnet8"]["variants"]
    for name in ("fp32-nchw", "fp32-nhwc"):
        assert set(variants[name]["images_per_s"]) == {"teacher", "student", "mutual", "od"}
        assert all(v > 0 for v in variants[name]["images_per_s"].values())
    for name in ("amp-nchw", "amp-nhwc"):
        assert variants[name]["status"] == "skipped" and "CUDA" in variants[name]["reason"]
    assert tp["loader_images_per_s"] > 0


def test_shift_share_pipeline_compile_and_estimate(quick_run: tuple[Path, dict[str, Any]]) -> None:
    sections = quick_run[1]["sections"]
    for key, run in sections["shift_share"]["runs"].items():
        assert run["shift_modules"] > 0 and run["shift_backward_nodes_per_step"] == run["shift_modules"], key
        assert 0 < run["shift_share_of_op_cpu_time"] < 1, key
    pipeline = sections["data_pipeline"]
    assert pipeline["loader_images_per_s"] > 0 and set(pipeline["configs"]) == {"teacher", "od"}
    compiled = sections["compile"]
    assert compiled["eager_images_per_s"] > 0
    assert all(("speedup" in mode) or mode["error"] for mode in compiled["modes"].values())
    assert sections["ddp_nccl"]["all_reduce_ok"] and sections["ddp_nccl"]["backend"] == "gloo"
    estimate = sections["estimate"]
    assert estimate["hours_best"] > 0 and estimate["schedule"]["epochs"] == 300
    checks = quick_run[1]["checks"]
    assert any("AMP+NHWC" in c["check"] and c["pass"] is None and "CUDA" in c["note"] for c in checks)
    assert any("od / teacher-alone" in c["check"] and c["value"] > 0 for c in checks)


@pytest.mark.parametrize("section", ["real_run", "real_run_torchrun"])
def test_real_cli_run_killed_mid_epoch_and_resumed(quick_run: tuple[Path, dict[str, Any]], section: str) -> None:
    out, result = quick_run
    entry = result["sections"][section]
    kill = entry["kill_resume"]
    assert kill["ok"], kill.get("error")
    assert kill["killed_mid_epoch_2"] and kill["first"]["epochs_recorded_at_kill"] == [0]
    assert kill["resume"]["epochs_recorded"] == [0, 1] and kill["resume"]["summary"]["epochs"] == 2
    launcher = "single" if section == "real_run" else "torchrun"
    assert (out / "real" / f"{launcher}-kill-resume" / "summary.json").is_file()
    if section == "real_run":
        assert entry["one_epoch"]["ok"] and entry["one_epoch"]["summary"]["epochs"] == 1
    else:
        assert "torch.distributed.run" in kill["first"]["command"]
