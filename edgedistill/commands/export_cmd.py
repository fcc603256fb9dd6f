"""``edgedistill export`` and ``edgedistill targets``."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import click
from rich.markup import escape

from edgedistill.commands.common import ListingOption, backend_names, friendly_errors, json_option, print_json
from edgedistill.ui import err_console, mib, out_console, pct, si, status_reporter, table

if TYPE_CHECKING:
    from edgedistill.export.pipeline import ExportSummary


@click.command("export", epilog="Example: edgedistill export runs/od --target rpi4   (then: edgedistill bench bundles/od-rpi4-tvm)")
@click.argument("source", type=click.Path())
@click.option("--target", "-t", default="host", show_default=True, help="A target name (edgedistill targets), alias, or your own TOML file.")
@click.option("--model", "models", type=click.Choice(["student", "teacher", "both"]), default="both", show_default=True)
@click.option("--backend", "-b", cls=ListingOption, listing=backend_names,
              help="{names}  [default: the target's first backend]")
@click.option("--out", "-o", help="Bundle directory.  [default: bundles/<run>-<target>-<backend>]")
@click.option("--which", type=click.Choice(["best", "last"]), default="best", show_default=True, help="Which checkpoint of the run.")
@click.option("--batch-size", "--batch", "batch", type=click.IntRange(min=1), default=1, show_default=True,
              help="Fixed batch size of the exported models (--batch is an older spelling).")
@click.option("--image-size", type=click.IntRange(min=1), help="Input height/width of the exported models.  [default: the training size]")
@click.option("--dynamic-batch", is_flag=True, help="Export a dynamic batch dimension (ONNX only; compilers get --batch).")
@click.option("--tune-trials", type=click.IntRange(min=0),
              help="TVM MetaSchedule trial budget per model (0: untuned; tvm backend only). One database per target, "
                   "shared by every model and export: only kernels it lacks are tuned.  [default: the target's "
                   "[tvm] tune_trials: host 256, boards 0]")
@click.option("--tuning-dir", help="Tuning database cache.  [default: ~/.cache/edgedistill/tvm-tuning]")
@click.option("--rpc-tracker", metavar="HOST:PORT",
              help="Tune, and time the forms of --lowering auto, through a board: candidates are cross-compiled here "
                   "and timed on a board behind this TVM RPC tracker (needs --rpc-key; tvm backend only).")
@click.option("--rpc-key", metavar="KEY", help="The board's key at --rpc-tracker (e.g. rpi4).")
@click.option("--lowering", default="auto", show_default=True,
              help="Form of the cheap layers: auto (time each form with the backend that ships it, at the bundle's "
                   "precision, here or on the --rpc-tracker board; keep the fastest), trained (as trained), onehot (the "
                   "shift as a one-hot depthwise conv), folded (each cheap layer folded into one dense conv), fused (tvm "
                   "only: each shift and its 1×1 conv as one kernel reading the shifted addresses, no shifted copy in "
                   "memory). Every form is checked against PyTorch.")
@click.option("--teacher-checkpoint", help="A trained standard-conv teacher for runs that have none (od, dml).")
@click.option("--parity-samples", type=click.IntRange(min=1), default=32, show_default=True, help="Real test images for the parity checks.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]),
              help="Precision of the shipped artifacts: int8 is onnxruntime static quantization (QDQ, calibrated on "
                   "training images) or a TensorRT int8 engine; fp16 is a TensorRT engine, or onnxruntime on ARM CPUs with fp16 "
                   "arithmetic (rpi5, Jetson CPUs); the fp32 ONNX stays in the bundle as the reference.  "
                   "[default: the target's, where the backend offers it, else fp32]")
@click.option("--calibration-samples", type=click.IntRange(min=1), default=256, show_default=True,
              help="Real training images int8 is calibrated on (onnxruntime), or shipped for the TensorRT engine build.")
@click.option("--calibration-method", type=click.Choice(["minmax", "entropy", "percentile"]), default="minmax",
              show_default=True, help="int8 calibration of the activation ranges (--precision int8 only).")
@click.option("--eval-limit", type=click.IntRange(min=0),
              help="Measure each artifact's top-1 on the first N images of the run's test split (0: do not measure).  "
                   "[default: the whole split]")
@click.option("--device-eval-samples", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Seeded test images shipped in the bundle for 'python3 -m deploy.run eval' on the device (0: none).")
@click.option("--max-accuracy-drop", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Points of top-1 a quantized artifact may lose against the fp32 one before it is flagged.")
@click.option("--data-dir", help="Dataset folder (for parity and calibration samples).")
@click.option("--force", is_flag=True, help="Replace an existing bundle written by edgedistill export (never any other folder or file).")
@json_option
@friendly_errors
def export_command(source: str, target: str, models: str, backend: str | None, out: str | None, which: str, batch: int,
                   image_size: int | None, dynamic_batch: bool, tune_trials: int | None, tuning_dir: str | None,
                   rpc_tracker: str | None, rpc_key: str | None, teacher_checkpoint: str | None,
                   lowering: str, parity_samples: int, precision: str | None, calibration_samples: int, calibration_method: str,
                   eval_limit: int | None, device_eval_samples: int, max_accuracy_drop: float, data_dir: str | None, force: bool, as_json: bool) -> None:
    """Export a trained student (and its standard-conv teacher) into a deploy bundle for a target.

    SOURCE is a run directory of 'edgedistill train' (or one of its .pt files). Each model goes
    to ONNX, is checked against PyTorch with onnxruntime on real test images, then compiled
    for the target (TVM, or checked for TensorRT and built on the device). The bundle is
    written atomically and carries its own torch-free runner.
    """
    from edgedistill.export.pipeline import ExportOptions, export_bundle

    options = ExportOptions(
        target=target, models=("student", "teacher") if models == "both" else (models,), backend=backend, out=out,
        which=which, batch=batch, image_size=image_size, dynamic_batch=dynamic_batch, tune_trials=tune_trials, tuning_dir=tuning_dir,
        rpc_tracker=rpc_tracker, rpc_key=rpc_key,
        parity_samples=parity_samples, calibration_samples=calibration_samples, data_dir=data_dir,
        teacher_checkpoint=teacher_checkpoint, overwrite=force, lowering=lowering, precision=precision,
        calibration_method=calibration_method, eval_limit=eval_limit, max_accuracy_drop=max_accuracy_drop,
        device_eval_samples=device_eval_samples,
    )
    with status_reporter("exporting", echo=not as_json) as report:
        summary = export_bundle(source, options, report)
    if as_json:
        print_json(dataclasses.asdict(summary))
        return
    render_export_summary(summary)


def render_export_summary(summary: ExportSummary) -> None:
    from edgedistill.export.accuracy import label

    rows = []
    for m in summary.models:
        worst = max(p["max_abs_diff"] for p in m.parity)
        macs = si(m.macs) if m.executed_macs == m.macs else f"{si(m.macs)} ({si(m.executed_macs)} run)"
        measured = "\n".join(f"{label(a)} {pct(a['test_top1'])}" + (" (!)" if a.get("flagged") else "")
                              for a in m.artifact_accuracy) or ("not measured" if m.trained else "untrained")
        rows.append((m.role, m.model, m.lowering, si(m.params), macs, pct(m.accuracy) if m.trained else "untrained", measured,
                     mib(m.onnx_bytes), mib(m.compiled_bytes), f"{worst:.1e}", f"{m.seconds:.1f} s"))
    caption = f"parity checked on {summary.samples}"
    if summary.evaluation:
        caption += f"; artifact top-1 measured here on {summary.evaluation}"
    out_console.print(table(
        f"bundle {escape(summary.bundle)}: {summary.target}, {summary.backend}, {summary.precision}, "
        f"{mib(summary.bundle_bytes)}, {summary.seconds:.0f} s",
        ["model", "network", "form", "params", "MACs", "checkpoint top-1", "artifact top-1", "ONNX", "compiled", "max |diff|", "time"],
        rows, caption=escape(caption),
    ))
    if len(summary.models) == 2:
        student, teacher = summary.models
        ratio = f"size: ONNX {teacher.onnx_bytes / student.onnx_bytes:.1f}× smaller"
        if student.compiled_bytes and teacher.compiled_bytes:
            ratio += f", compiled {teacher.compiled_bytes / student.compiled_bytes:.1f}× smaller"
        err_console.print(f"student vs teacher: {ratio}; MACs {teacher.macs / student.macs:.1f}× fewer")
    for note in summary.notes:
        err_console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    err_console.print(f"next: edgedistill bench {escape(summary.bundle)}", highlight=False)


@click.command("targets")
@click.option("--show", metavar="NAME", help="Print the TOML file of a shipped target (a template for your own board).")
@json_option
@friendly_errors
def targets_command(show: str | None, as_json: bool) -> None:
    """The deployment targets --target accepts.

    Add a board: 'edgedistill targets --show rpi4 > my-board.toml', edit it, then pass
    '--target my-board.toml' to export and bench.
    """
    from edgedistill.export.targets import list_targets, target_toml

    if show:
        click.echo(target_toml(show), nl=False)
        return
    targets = list_targets()
    if as_json:
        print_json([t.raw for t in targets])
        return
    out_console.print(table(
        "deployment targets",
        ["name", "aliases", "device", "backends", "precision", "description"],
        [(t.name, ", ".join(t.aliases), f"{t.device} ({t.arch})", ", ".join(t.backends), t.precision, t.description) for t in targets],
    ))


COMMANDS = [export_command, targets_command]
