"""``edgedistill demo``: the three stages end to end on the offline default data."""

from __future__ import annotations

from pathlib import Path

import click

from edgedistill.commands.common import friendly_errors
from edgedistill.errors import EdgeDistillError
from edgedistill.ui import err_console, status_reporter


@click.command("demo")
@click.option("--out", "-o", default="runs/demo", show_default=True, help="Where the run, bundle and report go.")
@click.option("--method", type=click.Choice(["mutual", "od"]), default="mutual", show_default=True,
              help="mutual: a standard-conv teacher and its student learn together, so the bench compares two trained "
                   "networks; od: the paper's online teacher over 4 students (the bench's teacher is then an untrained reference).")
@click.option("--kind", "-k", default="shift", show_default=True, help="Cheap convolution of the student.")
@click.option("--epochs", "-e", type=int, default=1, show_default=True)
@click.option("--target", "-t", default="host", show_default=True)
@click.option("--backend", "-b", type=click.Choice(["onnxruntime", "tvm", "tensorrt"]),
              help="Compiler of the bundle.  [default: tvm where the target has it, so the bench compares it with onnxruntime]")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads for training and benchmarking.")
@click.option("--limit", type=click.IntRange(min=1), help="Train and test on N images only (a first look in seconds).")
@click.option("--quick", is_flag=True, help="Short timing (20 runs, 0.3 s per model) and no memory probes.")
@friendly_errors
def demo_command(
    out: str, method: str, kind: str, epochs: int, target: str, backend: str | None, threads: int | None, limit: int | None,
    quick: bool,
) -> None:
    """Train (Fashion-MNIST, ResNet-20), export for --target, and benchmark student vs teacher.

    Offline, a few minutes on a laptop CPU. Each stage prints its table; everything lands in --out.
    """
    from deploy.measure import MeasureConfig
    from edgedistill.bench.report import write_report
    from edgedistill.bench.service import BenchOptions, run_bench
    from edgedistill.commands.bench_cmd import render_bench
    from edgedistill.commands.export_cmd import render_export_summary
    from edgedistill.commands.train_cmd import render_train_summary
    from edgedistill.config import TrainConfig
    from edgedistill.distill.progress import RichEpochReporter
    from edgedistill.export.pipeline import ExportOptions, export_bundle
    from edgedistill.export.targets import load_target
    from edgedistill.training import train

    root = Path(out)
    if root.exists():
        raise EdgeDistillError(f"{root} already exists", "remove it or pass another --out")
    if backend is None:
        backend = "tvm" if "tvm" in load_target(target).backends else None  # None: the target's default
    err_console.rule("1/3  train")
    cfg = TrainConfig(method=method, kind=kind, epochs=epochs, threads=threads, limit=limit, out=str(root / "run"))
    with RichEpochReporter(cfg.epochs) as reporter:
        summary = train(cfg, reporter)
    if summary is None:
        return
    render_train_summary(summary)
    err_console.rule(f"2/3  export for {target}")
    with status_reporter("exporting") as report:
        exported = export_bundle(root / "run", ExportOptions(target=target, backend=backend, out=str(root / "bundle")), report)
    render_export_summary(exported)
    err_console.rule("3/3  benchmark")
    with status_reporter("benchmarking") as report:
        timing = MeasureConfig.quick() if quick else MeasureConfig()
        options = BenchOptions(threads=threads, config=timing, memory=not quick)
        result = run_bench(str(root / "bundle"), options, report)
    render_bench(result.documents)
    written = write_report(result.documents, root / "bundle" / "report")
    err_console.print("report: " + ", ".join(map(str, written)))


COMMANDS = [demo_command]
