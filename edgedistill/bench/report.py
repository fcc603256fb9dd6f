"""One report from many benchmark documents: rows, student-vs-teacher comparisons, JSON, markdown.

A document is what ``deploy.bench`` (on the host or a board), the PyTorch
reference or the RPC bench produced (format ``edgedistill-bench/1``); device
results come in through ``edgedistill bench --import``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from deploy import BENCH_FORMAT
from edgedistill.errors import EdgeDistillError

REPORT_FORMAT = "edgedistill-report/1"


@dataclass(frozen=True)
class Comparison:
    where: str
    backend: str
    teacher_ms: float
    student_ms: float
    speedup: float
    """Teacher median latency / student median latency."""
    macs_ratio: float | None
    """Teacher MACs / student MACs: the speed-up the FLOP count promises."""
    speedup_vs_macs: float | None
    """How much of that promise the measurement delivers (speed-up / MACs ratio)."""
    file_ratio: float | None
    rss_ratio: float | None
    accuracy_delta: float | None
    """Student test top-1 minus teacher test top-1, when both are trained."""
    emulated: bool


def where(document: dict[str, Any]) -> str:
    env = document.get("environment") or {}
    name = env.get("hostname") or "?"
    if env.get("rpc"):
        name = f"{name} (rpc key {env['rpc']['key']})"
    return f"{name} [emulated]" if env.get("emulated") else name


def load_document(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise EdgeDistillError(f"result file not found: {path}", "pass the JSON written by 'python3 -m deploy.run bench'") from None
    except json.JSONDecodeError as exc:
        raise EdgeDistillError(f"{path} is not valid JSON ({exc.msg}, line {exc.lineno})", "copy the file again from the device") from None
    if not isinstance(document, dict) or document.get("format") != BENCH_FORMAT or "results" not in document:
        raise EdgeDistillError(f"{path} is not an edgedistill benchmark result", f"expected format {BENCH_FORMAT}")
    return document


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def _top1(result: dict[str, Any]) -> float | None:
    return (result.get("accuracy") or {}).get("test_top1")


def compare_documents(documents: list[dict[str, Any]]) -> list[Comparison]:
    comparisons = []
    for document in documents:
        by_backend: dict[str, dict[str, dict[str, Any]]] = {}
        for result in document["results"]:
            by_backend.setdefault(result["backend"], {})[result["model"]] = result
        for backend, pair in by_backend.items():
            if not {"student", "teacher"} <= pair.keys():
                continue
            s, t = pair["student"], pair["teacher"]
            speedup = t["latency_ms"]["median"] / s["latency_ms"]["median"]
            macs = _ratio(t.get("macs"), s.get("macs"))
            s_mem, t_mem = s.get("memory") or {}, t.get("memory") or {}
            accuracy = _top1(s) - _top1(t) if _top1(s) is not None and _top1(t) is not None else None
            comparisons.append(Comparison(
                where(document), backend, t["latency_ms"]["median"], s["latency_ms"]["median"], speedup, macs,
                speedup / macs if macs else None, _ratio(t_mem.get("file_bytes"), s_mem.get("file_bytes")),
                _ratio(t_mem.get("peak_rss_delta_bytes"), s_mem.get("peak_rss_delta_bytes")), accuracy,
                bool((document.get("environment") or {}).get("emulated")),
            ))
    return comparisons


def report_document(documents: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "format": REPORT_FORMAT,
        "documents": documents,
        "comparisons": [asdict(c) for c in compare_documents(documents)],
    }


def write_report(documents: list[dict[str, Any]], out_dir: Path, plot: bool = True) -> list[Path]:
    """report.json, report.md and (with ``plot``) accuracy-latency.png in ``out_dir``, each written atomically."""
    from edgedistill.utils.atomic import write_json_atomic, write_text_atomic

    written = [out_dir / "report.json", out_dir / "report.md"]
    write_json_atomic(written[0], report_document(documents))
    write_text_atomic(written[1], markdown(documents))
    if plot:
        from edgedistill.bench.plot import plot_accuracy_latency  # matplotlib, only when asked for

        written.append(plot_accuracy_latency(documents, out_dir / "accuracy-latency.png"))
    return written


def notes(documents: list[dict[str, Any]]) -> list[str]:
    """What a reader must know to read these figures right."""
    results = [r for document in documents for r in document["results"]]
    found = []
    if any(r["backend"] == "tvm-rpc" for r in results):
        found.append("tvm-rpc rows are timed on the board by TVM's time evaluator; their percentiles and cv are over "
                     "means of several runs, so they spread less than per-call figures.")
    if any(r["backend"].startswith("tvm") and r.get("tvm_tuning_trials") == 0 for r in results):
        found.append("the TVM code is untuned: TVM's default schedules are far slower than onnxruntime (most of all for "
                     "standard convs, so the TVM speed-up flatters the student); export with --tune-trials 64 or more "
                     "before comparing TVM.")
    return found


def markdown(documents: list[dict[str, Any]]) -> str:
    """The latency table and the comparisons as markdown (for READMEs and notes)."""
    lines = [
        "| where | backend | model | median ms | p90 ms | p99 ms | cv | first run ms | peak RSS Δ MiB | file MiB | test top-1 |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for document in documents:
        for r in document["results"]:
            lat, mem = r["latency_ms"], r.get("memory") or {}
            top1 = _top1(r)
            cells = [
                where(document), r["backend"], r["model"], f"{lat['median']:.3f}", f"{lat['p90']:.3f}", f"{lat['p99']:.3f}",
                f"{lat['cv']:.2f}" + (" (high)" if lat["high_cv"] else ""), f"{lat['first_run']:.2f}",
                _mib(mem.get("peak_rss_delta_bytes")), _mib(mem.get("file_bytes")),
                "untrained" if top1 is None else f"{100 * top1:.2f}%",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    for note in notes(documents):
        lines += ["", f"Note: {note}"]
    comparisons = compare_documents(documents)
    if comparisons:
        lines += ["", "| where | backend | speed-up (teacher/student) | MACs ratio | speed-up / MACs ratio | file ratio | RSS ratio |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        for c in comparisons:
            lines.append(
                f"| {c.where} | {c.backend} | {c.speedup:.2f}× | {_fmt(c.macs_ratio, '×')} | {_fmt(c.speedup_vs_macs)} | "
                f"{_fmt(c.file_ratio, '×')} | {_fmt(c.rss_ratio, '×')} |"
            )
    return "\n".join(lines) + "\n"


def _mib(value: float | None) -> str:
    return "—" if value is None else f"{value / 2**20:.2f}"


def _fmt(value: float | None, unit: str = "") -> str:
    return "—" if value is None else f"{value:.2f}{unit}"
