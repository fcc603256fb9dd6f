"""Accuracy against latency, student and teacher per backend (PNG, matplotlib): colour is the
backend and machine (and thread count in a sweep), marker shape the precision (fp32, int8 side by side)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deploy.report import thread_sweep, threads_label, where
from edgedistill.errors import ToolchainError
from edgedistill.utils.atomic import save_with

MARKERS = {"fp32": "o", "fp16": "^", "int8": "D"}


def plot_accuracy_latency(documents: list[dict[str, Any]], path: Path) -> Path:
    """Write the plot to ``path``; untrained reference networks are drawn on the x axis, hollow."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ToolchainError("the plot needs matplotlib", "pip install 'edgedistill[plot]', or pass --no-plot") from exc
    figure, axes = plt.subplots(figsize=(7, 4.5))
    colours: dict[str, Any] = {}
    precisions: set[str] = set()
    sweep = thread_sweep(documents)
    for document in documents:
        for r in document["results"]:
            threads = f", {threads_label(r['threads'])}" if sweep and r.get("threads") is not None else ""
            label = f"{r['backend']}{threads} @ {where(document)}"
            first = label not in colours
            colour = colours.setdefault(label, f"C{len(colours) % 10}")
            precision = str(r.get("precision") or "fp32")
            precisions.add(precision)
            top1 = (r.get("accuracy") or {}).get("test_top1")
            x = r["latency_ms"]["median"]
            y = 100 * top1 if top1 is not None else 0.0
            axes.scatter(x, y, marker=MARKERS.get(precision, "x"), s=60, color=colour,
                         facecolors="none" if top1 is None else colour, label=label if first else None)
            name = r["model"] if precision == "fp32" else f"{r['model']} {precision}"
            axes.annotate(name, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    for precision in sorted(precisions):  # the marker legend: grey proxies, one per precision shown
        axes.scatter([], [], marker=MARKERS.get(precision, "x"), color="grey", label=precision)
    axes.set_xscale("log")
    axes.set_xlabel("median latency per batch (ms, log scale)")
    axes.set_ylabel("test top-1 (%)  — hollow: untrained reference")
    axes.set_title("student vs teacher: accuracy against latency")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8, loc="best")
    try:
        figure.tight_layout()
        save_with(path, lambda tmp: figure.savefig(tmp, dpi=120, format="png"))
    finally:
        plt.close(figure)
    return path
