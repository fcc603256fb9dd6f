"""``edgedistill demo``: the three stages end to end on the offline default data.

``--out`` gets a ``demo.json`` beside ``run/`` and ``bundle/``: the settings the demo was started
with and whether it finished. Running the same ``edgedistill demo`` again after an interruption
continues it: a finished training is reused, an unfinished one resumed (``train --resume``), a
complete bundle reused (export builds it in a temporary directory, so a bundle is never half
there), and the benchmark, which leaves nothing half-written either, is run again. A folder that
holds anything but a demo's own output is never written into.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from edgedistill.commands.common import ListingOption, backend_names, friendly_errors, kind_names
from edgedistill.errors import EdgeDistillError, Interrupted
from edgedistill.ui import err_console, status_reporter

DEMO_MARKER = "demo.json"
DEMO_FORMAT = "edgedistill-demo/1"
DEFAULTS: dict[str, Any] = {"method": "mutual", "kind": "shift", "epochs": 1, "target": "host", "backend": None, "limit": None}
"""The settings that decide what a demo's files hold (a rerun must repeat them to continue it)."""


@click.command("demo")
@click.option("--out", "-o", default="runs/demo", show_default=True, help="Where the run, bundle and report go.")
@click.option("--method", type=click.Choice(["mutual", "od"]), default="mutual", show_default=True,
              help="mutual: a standard-conv teacher and its student learn together, so the bench compares two trained "
                   "networks; od: the paper's online teacher over 4 students (the bench's teacher is then an untrained reference).")
@click.option("--kind", "-k", default="shift", show_default=True, cls=ListingOption, listing=kind_names,
              help="Cheap convolution of the student: {names}.")
@click.option("--epochs", "-e", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--target", "-t", default="host", show_default=True)
@click.option("--backend", "-b", cls=ListingOption, listing=backend_names,
              help="{names}: the bundle's backend.  [default: tvm where the target has it, so the bench compares it with onnxruntime]")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads for training and benchmarking.")
@click.option("--limit", type=click.IntRange(min=1), help="Train and test on N images only (a first look in seconds).")
@click.option("--tune-trials", type=click.IntRange(min=0), default=0, show_default=True,
              help="TVM MetaSchedule trials per model (0: untuned TVM code, labelled so; the host target's own default, "
                   "256, takes about 10 minutes here the first time).")
@click.option("--quick", is_flag=True, help="Short timing (20 runs, 0.3 s per model) and no memory probes.")
@friendly_errors
def demo_command(
    out: str, method: str, kind: str, epochs: int, target: str, backend: str | None, threads: int | None, limit: int | None,
    tune_trials: int, quick: bool,
) -> None:
    """Train (Fashion-MNIST, ResNet-20), export for --target, and benchmark student vs teacher.

    Offline, a few minutes on a laptop CPU. Each stage prints its table; everything lands in --out.
    Interrupted? Run the same command again: it continues where the demo stopped.
    """
    from edgedistill.config import TrainConfig
    from edgedistill.export.targets import load_target
    from edgedistill.backends import get_backend, timing_backend
    from edgedistill.training import check_networks

    root = Path(out)
    settings = {"method": method, "kind": kind, "epochs": epochs, "target": target, "backend": backend, "limit": limit}
    again = _command(root, settings, threads, tune_trials, quick)
    cfg = TrainConfig(method=method, kind=kind, epochs=epochs, threads=threads, limit=limit, out=str(root / "run"))
    cfg.validate()  # every bad setting fails here, before anything is written
    check_networks(cfg)
    spec = load_target(target)
    if backend is not None and backend not in spec.backends:  # an unknown name gets its suggestion here
        get_backend(backend)
        raise EdgeDistillError(f"target {spec.name} does not support the {backend} backend", f"its backends: {', '.join(spec.backends)}")
    chosen = backend or timing_backend(spec)
    existing = _check_out(root, settings, again)
    created_root = not root.exists()
    if existing is None:
        root.mkdir(parents=True, exist_ok=True)
        _write_marker(root, settings, finished=False)
    stage = "training"
    try:
        _train_stage(root, cfg)
        stage = "export"
        _export_stage(root, target, chosen, tune_trials)
        stage = "benchmark"
        _bench_stage(root, threads, quick)
    except Interrupted as exc:
        _forget_if_empty(root, created_root)
        raise Interrupted(f"demo interrupted during {stage} ({exc.message})", f"continue it with the same command: {again}") from None
    except KeyboardInterrupt:
        _forget_if_empty(root, created_root)
        raise Interrupted(f"demo interrupted during {stage}", f"continue it with the same command: {again}") from None
    except BaseException:
        _forget_if_empty(root, created_root)
        raise
    _write_marker(root, settings, finished=True)


def _command(root: Path, settings: dict[str, Any], threads: int | None, tune_trials: int, quick: bool) -> str:
    """The command line that repeats this demo (defaults left out)."""
    words = ["edgedistill", "demo", "--out", str(root)]
    for key, value in settings.items():
        if value != DEFAULTS[key]:
            words += [f"--{key}", str(value)]
    if threads:
        words += ["--threads", str(threads)]
    if tune_trials:
        words += ["--tune-trials", str(tune_trials)]
    if quick:
        words.append("--quick")
    return " ".join(words)


def _check_out(root: Path, settings: dict[str, Any], again: str) -> dict[str, Any] | None:
    """None for a new demo (no --out yet, or an empty folder); the marker of an unfinished demo with
    these settings; otherwise the one error that says why --out cannot be used."""
    if not root.exists():
        return None
    if not root.is_dir():
        raise EdgeDistillError(f"{root} already exists and is not a folder", "pass another --out")
    marker = root / DEMO_MARKER
    if not marker.is_file():
        if not any(root.iterdir()):
            return None
        raise EdgeDistillError(
            f"{root} already exists and is not an edgedistill demo's output (no {DEMO_MARKER})",
            "pass another --out: demo never writes into a folder it did not create",
        )
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = None
    if not isinstance(data, dict) or data.get("format") != DEMO_FORMAT:
        raise EdgeDistillError(f"{root} already exists and its {DEMO_MARKER} is not a demo's", "pass another --out")
    if data.get("finished"):
        raise EdgeDistillError(f"{root} already exists: it holds a finished demo", "remove it or pass another --out")
    saved = {**DEFAULTS, **(data.get("settings") or {})}
    changed = [key for key in settings if saved.get(key) != settings[key]]
    if changed:
        started = _command(root, {k: saved.get(k) for k in DEFAULTS}, None, 0, False)
        found = ", ".join(f"--{k} {saved.get(k)}" for k in changed)
        raise EdgeDistillError(
            f"{root} holds an interrupted demo started with other settings ({found})",
            f"continue it with: {started}; or pass another --out for a new demo",
        )
    return data


def _write_marker(root: Path, settings: dict[str, Any], finished: bool) -> None:
    from edgedistill.utils.atomic import write_json_atomic

    write_json_atomic(root / DEMO_MARKER, {"format": DEMO_FORMAT, "settings": settings, "finished": finished})


def _forget_if_empty(root: Path, created_root: bool) -> None:
    """A demo that failed or was stopped before writing anything leaves nothing behind: only its own
    marker (and the folder, if this demo made it) are removed, and only when nothing else is there."""
    marker = root / DEMO_MARKER
    try:
        if not marker.is_file() or any(p != marker for p in root.iterdir()):
            return
        data = json.loads(marker.read_text(encoding="utf-8"))
        if data.get("format") != DEMO_FORMAT or data.get("finished"):
            return
        marker.unlink()
        if created_root:
            root.rmdir()
    except (OSError, ValueError):
        pass


def _train_stage(root: Path, cfg: Any) -> None:
    from edgedistill.commands.train_cmd import render_train_summary
    from edgedistill.distill.progress import RichEpochReporter
    from edgedistill.training import TrainSummary, holds_run, train

    run = root / "run"
    err_console.rule("1/3  train")
    if (run / "summary.json").is_file():
        err_console.print(escape(f"reusing the finished training in {run}"), highlight=False)
        summary = TrainSummary.from_dict(json.loads((run / "summary.json").read_text(encoding="utf-8")))
    else:
        resume = holds_run(run)
        if resume:
            err_console.print(escape(f"continuing the interrupted training in {run}"), highlight=False)
        with RichEpochReporter(cfg.epochs) as reporter:
            summary = train(cfg, reporter, resume=resume)
        if summary is None:  # another DDP process
            raise SystemExit(0)
    render_train_summary(summary)


def _export_stage(root: Path, target: str, backend: str | None, tune_trials: int) -> None:
    from edgedistill.bench.service import is_bundle
    from edgedistill.commands.export_cmd import render_export_summary
    from edgedistill.export.pipeline import ExportOptions, export_bundle

    bundle = root / "bundle"
    err_console.rule(f"2/3  export for {escape(target)}")
    for leftover in root.glob(".bundle.*.tmp"):  # a killed export's temporary directory (this demo's own)
        shutil.rmtree(leftover, ignore_errors=True)
    if is_bundle(bundle):
        err_console.print(escape(f"reusing the bundle {bundle} (complete: export writes it in one rename)"), highlight=False)
        return
    if bundle.exists():
        raise EdgeDistillError(f"{bundle} exists but is not a bundle (no manifest.json)",
                               "the demo did not write it: move it away, then continue with the same command")
    with status_reporter("exporting") as report:
        # The artifacts' own top-1 on 1,000 test images: untuned TVM code needs ~35 ms an image here, the whole split minutes.
        # TVM stays untuned unless --tune-trials: the first command should take minutes, not a quarter of an hour.
        exported = export_bundle(root / "run", ExportOptions(target=target, backend=backend, out=str(bundle), eval_limit=1000,
                                                             tune_trials=tune_trials),
                                 _literal(report))
    render_export_summary(exported)


def _literal(report: Any) -> Any:
    """Progress messages name paths (``--out runs/[a]``): shown as written, never read as rich markup."""
    return lambda message: report(escape(message))


def _bench_stage(root: Path, threads: int | None, quick: bool) -> None:
    from deploy.measure import MeasureConfig
    from edgedistill.bench.report import write_report
    from edgedistill.bench.service import BenchOptions, run_bench
    from edgedistill.commands.bench_cmd import render_bench

    err_console.rule("3/3  benchmark")
    with status_reporter("benchmarking") as report:
        timing = MeasureConfig.quick() if quick else MeasureConfig()
        options = BenchOptions(threads=(threads,) if threads else (), config=timing, memory=not quick)
        result = run_bench(str(root / "bundle"), options, _literal(report))
    render_bench(result.documents)
    written = write_report(result.documents, root / "bundle" / "report")
    err_console.print(escape("report: " + ", ".join(map(str, written))), highlight=False)


COMMANDS = [demo_command]
