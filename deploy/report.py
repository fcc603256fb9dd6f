"""Plain-text table of a bench result (the board has no rich/click)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional


def _mib(value: Optional[float]) -> str:
    return "-" if value is None else f"{value / 2**20:.2f}"


def _row_cells(result: Dict[str, Any]) -> List[str]:
    lat = result["latency_ms"]
    mem = result.get("memory") or {}
    rss = _mib(mem.get("peak_rss_delta_bytes"))
    if "peak_rss_delta_bytes_arena_on" in mem:
        rss += f" / {_mib(mem['peak_rss_delta_bytes_arena_on'])}"
    accuracy = (result.get("accuracy") or {}).get("test_top1")
    return [
        result["model"],
        result["backend"],
        str(result["threads"]),
        f"{lat['first_run']:.3f}",
        f"{lat['median']:.3f}",
        f"{lat['p90']:.3f}",
        f"{lat['p99']:.3f}",
        f"{lat['mean']:.3f}±{lat['std']:.3f}",
        f"{lat['cv']:.2f}" + (" !" if lat["high_cv"] else ""),
        str(lat["runs"]),
        rss,
        _mib(mem.get("file_bytes")),
        "-" if accuracy is None else f"{accuracy:.4f}",
    ]


HEADER = [
    "model",
    "backend",
    "thr",
    "first ms",
    "median ms",
    "p90 ms",
    "p99 ms",
    "mean±std ms",
    "cv",
    "runs",
    "peak RSS Δ MiB (arena off/on)",
    "file MiB",
    "test top-1",
]


def warnings(documents: List[Dict[str, Any]]) -> List[str]:
    """What makes figures unreliable, for every renderer of bench documents (board and host alike)."""
    found = []
    if any(result["latency_ms"]["high_cv"] for document in documents for result in document["results"]):
        found.append("high coefficient of variation (cv marked !): the machine was busy or throttling; rerun on a quiet machine")
    if any((document.get("environment") or {}).get("emulated") for document in documents):
        found.append("emulated machine: its timings mean nothing, only correctness does")
    return found


def format_table(document: Dict[str, Any]) -> str:
    """The results as aligned columns, then the teacher/student speed-up and warnings."""
    rows = [HEADER] + [_row_cells(result) for result in document["results"]]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    by_model = {result["model"]: result for result in document["results"]}
    if "student" in by_model and "teacher" in by_model:
        ratio = by_model["teacher"]["latency_ms"]["median"] / by_model["student"]["latency_ms"]["median"]
        lines.append(f"speed-up of the student over the teacher (median latency): {ratio:.2f}x")
    env = document["environment"]
    lines.append(f"on {env['hostname']} ({env['machine']}, {env['cpu_model']}), governor {env['governor']}, {env['temperature_c']} °C")
    lines += [f"warning: {warning}" for warning in warnings([document])]
    return "\n".join(lines)
