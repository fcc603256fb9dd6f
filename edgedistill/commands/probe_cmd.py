"""``edgedistill probe``."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.markup import escape

from edgedistill.commands.common import ListingOption, backend_names, friendly_errors, json_option, print_json
from edgedistill.ui import err_console, out_console, si, status_reporter, table


@click.command("probe", epilog="Example: edgedistill probe --model resnet18_imagenet --image-size 224 --backend onnxruntime")
@click.option("--target", "-t", default="host", show_default=True,
              help="Where to measure: a target this machine can run, or a board's with --rpc-tracker.")
@click.option("--model", "-m", default="resnet20", show_default=True, help="Architecture (see 'edgedistill models').")
@click.option("--image-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--in-channels", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--variants", default=",".join(("teacher", "shift", "depthwise", "group:2", "group:4", "group:8")), show_default=True,
              help="Comma-separated: teacher, shift, depthwise, group:G.")
@click.option("--backend", "-b", "backends", multiple=True, cls=ListingOption, listing=backend_names,
              help="{names} (repeatable).  [default: every backend that runs here]")
@click.option("--threads", type=click.IntRange(min=1), help="Threads for every runtime.  [default: this machine's cores]")
@click.option("--tune-trials", type=click.IntRange(min=0), default=0, show_default=True, help="TVM MetaSchedule trials per network (with --rpc-tracker: tuned on the board).")
@click.option("--rpc-tracker", help="HOST:PORT of a TVM RPC tracker: time the variants' TVM libraries on a board of --rpc-key.")
@click.option("--rpc-key", help="Board key registered with the tracker (e.g. rpi4).")
@click.option("--rpc-wait", type=float, default=60.0, show_default=True, help="Seconds to wait for a free board.")
@click.option("--quick", is_flag=True, help="Short timing (20 runs, 0.3 s per network): a first look, not for reports.")
@click.option("--out", "-o", type=click.Path(), help="Folder for probe.json, probe.md, probe.png.  [default: probes/<model>-<size>-<target>]")
@click.option("--force", is_flag=True, help="Replace an earlier probe's folder (never any other).")
@json_option
@friendly_errors
def probe_command(target: str, model: str, image_size: int, in_channels: int, variants: str, backends: tuple[str, ...],
                  threads: int | None, tune_trials: int, rpc_tracker: str | None, rpc_key: str | None, rpc_wait: float, quick: bool,
                  out: str | None, force: bool, as_json: bool) -> None:
    """Step 0: which cheap student is worth training for this device? Times the teacher and each
    cheap variant, untrained, each backend's code in the form fastest with that backend, on every
    backend that runs here.

    Prints and writes params, nominal and executed MACs, latency per backend, speed-up over the
    teacher, speed-up / MACs ratio and the recommended kind per backend.
    """
    from deploy.measure import MeasureConfig
    from edgedistill.export.targets import load_target
    from edgedistill.probe import PROBE_FORMAT, ProbeOptions, markdown, parse_variant, plot, run_probe
    from edgedistill.utils.atomic import atomic_directory, write_json_atomic, write_text_atomic

    names = tuple(v.strip() for v in variants.split(",") if v.strip())
    for name in names:
        parse_variant(name)  # bad names fail before any work
    folder = Path(out) if out else Path("probes") / f"{model}-{image_size}-{load_target(target).name}"
    _check_folder(folder, force, PROBE_FORMAT)
    options = ProbeOptions(target=target, model=model, image_size=image_size, in_channels=in_channels, variants=names,
                           backends=backends, threads=threads, tune_trials=tune_trials,
                           rpc_tracker=rpc_tracker, rpc_key=rpc_key, rpc_wait_s=rpc_wait,
                           config=MeasureConfig.quick() if quick else MeasureConfig())
    with status_reporter("probing", echo=not as_json) as report:
        result = run_probe(options, report)
    with atomic_directory(folder, overwrite=True) as tmp:
        write_json_atomic(tmp / "probe.json", result.to_dict())
        write_text_atomic(tmp / "probe.md", markdown(result))
        try:
            plot(result, tmp / "probe.png")
        except ImportError:
            err_console.print("note: matplotlib is not installed: no probe.png (pip install matplotlib)", highlight=False)
    if as_json:
        print_json(result.to_dict())
        return
    columns = ["variant", "params", "MACs"]
    for b in result.backends:
        columns += [f"{b} form", "executed", f"{b} ms", f"{b} speed-up", "÷ MACs ratio"]
    rows = []
    for r in result.rows:
        row = [r.variant, si(r.params), si(r.macs)]
        for b in result.backends:
            row += [r.form[b], si(r.executed_macs[b]), f"{r.median_ms[b]:.3f}", f"{r.speedup[b]:.2f}×", f"{r.speedup_vs_macs[b]:.2f}"]
        rows.append(row)
    shape = "×".join(map(str, result.input_shape[1:]))
    out_console.print(table(f"probe: {escape(result.model)} at {shape} on {escape(result.target)}, {result.threads} threads",
                            columns, rows, caption="speed-up: the teacher's median latency over the variant's, same backend"))
    for backend, variant in result.recommended.items():
        spec = parse_variant(variant)
        how = f"  (edgedistill train --model {escape(model)} {spec.flags()})" if spec else ""
        err_console.print(f"recommended on {backend}: {variant}{how}", highlight=False)
    for note in result.notes:
        err_console.print(f"note: {escape(note)}", highlight=False)
    err_console.print(f"written: {escape(str(folder))}/probe.json, probe.md, probe.png", highlight=False)


def _check_folder(folder: Path, force: bool, fmt: str) -> None:
    from edgedistill.errors import EdgeDistillError

    if not folder.exists():
        return
    if not force:
        raise EdgeDistillError(f"{folder} already exists", "choose another --out, or pass --force to replace an earlier probe")
    try:
        ours = json.loads((folder / "probe.json").read_text(encoding="utf-8")).get("format") == fmt
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours or any(p.name not in ("probe.json", "probe.md", "probe.png") for p in folder.iterdir()):
        raise EdgeDistillError(f"{folder} is not an earlier probe's folder: --force will not replace it", "choose another --out")


COMMANDS = [probe_command]
