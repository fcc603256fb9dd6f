"""``edgedistill bench``."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape

from deploy.report import latency_table, where
from edgedistill.commands.common import ListingOption, backend_names, friendly_errors, json_option, print_json
from edgedistill.errors import EdgeDistillError, ToolchainError
from edgedistill.ui import err_console, out_console, status_reporter, table


@click.command("bench", epilog="Examples:\n\n\b\n  edgedistill bench runs/od                       # export for this host, measure every local backend\n"
               "  edgedistill bench bundles/od-rpi4-tvm --rpc-tracker 10.0.0.2:9190 --rpc-key rpi4\n"
               "  edgedistill bench --import result-from-jetson.json")
@click.argument("source", required=False, type=click.Path())
@click.option("--target", "-t", default="host", show_default=True, help="Target to export a run directory for.")
@click.option("--backend", "-b", "backends", multiple=True, cls=ListingOption, listing=backend_names,
              help="pytorch | {names} (repeatable).  [default: all that run here]")
@click.option("--model", "models", type=click.Choice(["student", "teacher", "both"]), default="both", show_default=True)
@click.option("--threads", type=click.IntRange(min=1), multiple=True,
              help="Threads for every runtime; repeat to measure at each count (--threads 1 --threads 2: a small "
                   "student often runs fastest on one thread, its teacher on more).  [default: the target's, at most "
                   "this machine's cores]")
@click.option("--runs", type=int, default=100, show_default=True, help="Minimum timed runs per model.")
@click.option("--min-time", type=float, default=2.0, show_default=True, help="Minimum timed seconds per model.")
@click.option("--repeats", type=int, default=5, show_default=True, help="Interleaved blocks (student, teacher, ...).")
@click.option("--warmup-runs", type=int, default=10, show_default=True)
@click.option("--warmup-time", type=float, default=0.2, show_default=True)
@click.option("--no-memory", is_flag=True, help="Skip the memory probes (fresh processes, a few seconds each).")
@click.option("--rpc-tracker", help="HOST:PORT of a TVM RPC tracker: run the bundle's TVM code on a remote board.")
@click.option("--rpc-key", help="Board key registered with the tracker (e.g. rpi4).")
@click.option("--rpc-wait", type=float, default=60.0, show_default=True, help="Seconds to wait for a free board.")
@click.option("--import", "imports", multiple=True, type=click.Path(), help="A result JSON from 'python3 -m deploy.run bench' on a device, or from 'python3 -m deploy.run eval' (its top-1 goes onto the rows of the artifacts it measured); repeatable.")
@click.option("--out", "-o", type=click.Path(), help="Reports directory: each run writes OUT/<UTC time>/ (report.json, report.md, "
              "accuracy-latency.png) and points OUT/latest at it; earlier reports are kept.  [default: BUNDLE/report, "
              "./bench-report for --import only]")
@click.option("--plot/--no-plot", default=True, show_default=True, help="Write the accuracy-vs-latency PNG.")
@click.option("--wide", is_flag=True, help="Show every latency and memory column (p99, first run, ORT arena on, weights, "
              "threads); report.json and report.md always have them all.")
@click.option("--force", is_flag=True, help="Measure a bundle made for another target anyway (onnxruntime only makes sense then), "
              "or upload to an RPC board without checking its architecture.")
@json_option
@friendly_errors
def bench_command(source: str | None, target: str, backends: tuple[str, ...], models: str, threads: tuple[int, ...], runs: int,
                  min_time: float, repeats: int, warmup_runs: int, warmup_time: float, no_memory: bool, rpc_tracker: str | None,
                  rpc_key: str | None, rpc_wait: float, imports: tuple[str, ...], out: str | None, plot: bool, wide: bool,
                  force: bool, as_json: bool) -> None:
    """Latency and memory of the student against its teacher, measured the same way.

    SOURCE is a bundle (edgedistill export) or a run directory (exported for --target first).
    Student and teacher are timed interleaved (warm-up by time and count, first run apart,
    median/p90/p99 over repeats); memory is measured in fresh processes. The report shows the
    measured speed-up beside the MACs ratio, and is written as JSON, markdown and a PNG plot
    into a new directory per run (OUT/<UTC time>/, OUT/latest points at the newest).
    """
    from deploy.measure import MeasureConfig
    from edgedistill.bench.report import check_report_dir, report_document, save_report
    from edgedistill.bench.service import BenchOptions, default_report_dir, run_bench

    try:
        config = MeasureConfig(warmup_runs=warmup_runs, warmup_seconds=warmup_time, min_runs=runs, min_seconds=min_time, repeats=repeats)
    except ValueError as exc:
        raise EdgeDistillError(f"invalid measurement settings: {exc}", "see edgedistill bench --help") from exc
    options = BenchOptions(
        target=target, backends=backends, models=("student", "teacher") if models == "both" else (models,), threads=threads,
        config=config, memory=not no_memory, rpc_tracker=rpc_tracker, rpc_key=rpc_key, rpc_wait_s=rpc_wait,
        imports=imports, force=force,
    )
    # Before measuring: an unwritable report directory or a missing plotter fails now, not minutes later.
    planned = Path(out) if out else default_report_dir(source, options)
    if planned is not None:
        check_report_dir(planned)
    if plot and importlib.util.find_spec("matplotlib") is None:
        raise ToolchainError("the plot needs matplotlib (nothing was measured)", "pip install 'edgedistill[plot]', or pass --no-plot")
    with status_reporter("benchmarking", echo=not as_json) as progress:
        result = run_bench(source, options, progress)
    out_dir = Path(out) if out else (result.bundle / "report" if result.bundle else Path("bench-report"))
    # The figures first: if saving fails, what was measured is on the screen all the same.
    if as_json:
        print_json(report_document(result.documents))
    else:
        render_bench(result.documents, wide=wide)
    try:
        saved = save_report(result.documents, out_dir, plot)
    except EdgeDistillError as exc:
        raise EdgeDistillError(f"measured, but the report could not be saved: {exc.message}",
                               (exc.hint + "; " if exc.hint else "") + "the figures are printed above") from None
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        raise EdgeDistillError(f"measured, but the report could not be saved to {out_dir}: {exc.strerror or exc}{where}",
                               "the figures are printed above; free some space or pass --out elsewhere and rerun") from None
    if not as_json:
        for line in saved.describe():
            err_console.print(escape(line), highlight=False)


def _latency_rows(documents: list[dict], wide: bool, show_where: bool) -> tuple[list[str], list[tuple]]:
    """deploy.report's latency table (the one definition of its columns), cells escaped for rich."""
    columns, rows = latency_table(documents, wide=wide, show_where=show_where)
    return columns, [tuple(None if cell is None else escape(cell) for cell in row) for row in rows]


def render_bench(documents: list[dict], wide: bool = False, console: Console | None = None) -> None:
    """The latency/memory table and the student-vs-teacher comparison, with warnings.

    By default the latency table has median, p90, cv, peak RSS, file size and top-1; ``wide`` adds
    threads, p99, the first run, RSS with onnxruntime's arena on and the weight bytes. The
    machine is a column only when there are several (else it is in the title).
    """
    from deploy.report import warnings
    from edgedistill.bench.report import compare_documents, notes

    console = console or out_console
    machines = list(dict.fromkeys(where(d) for d in documents))
    show_where = len(machines) > 1
    on = "" if show_where else f" on {escape(machines[0])}"
    keys = 3 if show_where else 2
    columns, rows = _latency_rows(documents, wide, show_where)
    console.print(table(f"latency (ms per batch) and memory{on}", columns, rows, keys=keys))
    comparisons = compare_documents(documents)
    if comparisons:
        console.print(table(
            f"student vs teacher{on}",
            (["where"] if show_where else []) + ["backend", "speed-up", "MACs ratio", "speed-up / MACs", "file ratio",
                                                 "RSS ratio", "Δ top-1"],
            [((escape(c.where),) if show_where else ()) + (
                c.backend, f"{c.speedup:.2f}×", f"{c.macs_ratio:.1f}×" if c.macs_ratio else None,
                f"{c.speedup_vs_macs:.2f}" if c.speedup_vs_macs else None, f"{c.file_ratio:.1f}×" if c.file_ratio else None,
                f"{c.rss_ratio:.1f}×" if c.rss_ratio else None,
                f"{100 * c.accuracy_delta:+.2f} pt" if c.accuracy_delta is not None else "teacher untrained")
             for c in comparisons],
            keys=keys - 1,
        ))
    for warning in warnings(documents):
        err_console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    for note in notes(documents):
        err_console.print(f"note: {escape(note)}", highlight=False)


COMMANDS = [bench_command]
