"""The latency/memory table of bench documents: one definition of its columns, rendered as plain
text here (the board has no rich), and by the host as a rich table and as markdown."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

Cell = Callable[[Dict[str, Any], Dict[str, Any]], Optional[str]]
"""(document, result) -> the cell's text, or None for "no figure"."""


def _mib(value: Optional[float]) -> Optional[str]:
    return None if value is None else f"{value / 2**20:.2f}"


def _latency(key: str, digits: int) -> Cell:
    return lambda document, result: f"{result['latency_ms'][key]:.{digits}f}"


def _memory(key: str) -> Cell:
    return lambda document, result: _mib((result.get("memory") or {}).get(key))


def where(document: Dict[str, Any]) -> str:
    """The machine a document was measured on, as tables name it."""
    env = document.get("environment") or {}
    name = env.get("hostname") or "?"
    if env.get("rpc"):
        name = f"{name} (rpc key {env['rpc']['key']})"
    return f"{name} [emulated]" if env.get("emulated") else name


def _top1(document: Dict[str, Any], result: Dict[str, Any]) -> str:
    top1 = (result.get("accuracy") or {}).get("test_top1")
    if top1 is None:
        return "not measured" if (result.get("accuracy_source") or {}).get("measured") == "not measured" else "untrained"
    return f"{100 * top1:.2f}%"


def _top1_source(document: Dict[str, Any], result: Dict[str, Any]) -> Optional[str]:
    """Where the row's top-1 comes from: the artifact itself (machine, images) or the checkpoint."""
    accuracy = result.get("accuracy_source") or {}
    if accuracy.get("measured") == "artifact":
        on = str(accuracy.get("measured_on") or "?").split(" (")[0]
        return f"{on} ({accuracy.get('images')})"
    return {"checkpoint": "checkpoint"}.get(accuracy.get("measured"))


def _backend(result: Dict[str, Any]) -> str:
    """The backend, with TVM code that was not tuned marked as such (it is many times slower than tuned)."""
    untuned = result["backend"].startswith("tvm") and result.get("tvm_tuning_trials") == 0
    return result["backend"] + (" (untuned)" if untuned else "")


def _cv(document: Dict[str, Any], result: Dict[str, Any]) -> str:
    latency = result["latency_ms"]
    return f"{latency['cv']:.2f}" + ("!" if latency["high_cv"] else "")


# (header, in the narrow table too, cell). A high cv is marked "!" (see warnings()).
COLUMNS: Tuple[Tuple[str, bool, Cell], ...] = (
    ("where", True, lambda document, result: where(document)),
    ("backend", True, lambda document, result: _backend(result)),
    ("model", True, lambda document, result: result["model"]),
    ("precision", True, lambda document, result: result.get("precision")),
    ("form", True, lambda document, result: (result.get("lowering") or {}).get("form")),
    ("threads", False, lambda document, result: None if result.get("threads") is None else str(result["threads"])),
    ("median ms", True, _latency("median", 3)),
    ("p90 ms", True, _latency("p90", 3)),
    ("p99 ms", False, _latency("p99", 3)),
    ("cv", True, _cv),
    ("first run ms", False, _latency("first_run", 2)),
    ("runs", False, lambda document, result: str(result["latency_ms"]["runs"])),
    ("peak RSS Δ MiB", True, _memory("peak_rss_delta_bytes")),
    ("RSS Δ ORT arena on MiB", False, _memory("peak_rss_delta_bytes_arena_on")),
    ("file MiB", True, _memory("file_bytes")),
    ("weights MiB", False, _memory("weight_bytes")),
    ("test top-1", True, _top1),
    ("top-1 measured", False, _top1_source),
)


def thread_sweep(documents: Sequence[Dict[str, Any]]) -> bool:
    """Whether the rows of ``documents`` ran at different thread counts (each then says its count)."""
    return len({result.get("threads") for document in documents for result in document["results"]}) > 1


def threads_label(threads: int) -> str:
    """"1 thread", "2 threads": how a row of a thread sweep names its count."""
    return f"{threads} thread{'s' if threads > 1 else ''}"


def latency_table(documents: Sequence[Dict[str, Any]], wide: bool = True,
                  show_where: bool = True) -> Tuple[List[str], List[List[Optional[str]]]]:
    """Headers and rows (plain text; None = no figure) of every result of ``documents``; the threads
    column is in the narrow table too when the rows ran with different thread counts."""
    sweep = thread_sweep(documents)
    columns = [(h, cell) for h, narrow, cell in COLUMNS
               if (wide or narrow or (h == "threads" and sweep)) and (show_where or h != "where")]
    rows = [[cell(document, result) for _, cell in columns] for document in documents for result in document["results"]]
    return [h for h, _ in columns], rows


def warnings(documents: Sequence[Dict[str, Any]]) -> List[str]:
    """What makes figures unreliable, for every renderer of bench documents (board and host alike)."""
    found = []
    if any(result["latency_ms"]["high_cv"] for document in documents for result in document["results"]):
        found.append("high coefficient of variation (cv marked !): the machine was busy or throttling; rerun on a quiet machine")
    if any((document.get("environment") or {}).get("emulated") for document in documents):
        found.append("emulated machine: its timings mean nothing, only correctness does")
    return found


def accuracy_notes(documents: Sequence[Dict[str, Any]]) -> List[str]:
    """Where the top-1 figures of the rows were measured (each row carries its own artifact's)."""
    places, checkpoint = set(), False
    for document in documents:
        for result in document["results"]:
            accuracy = result.get("accuracy_source") or {}
            if accuracy.get("measured") == "artifact":
                places.add(f"{accuracy.get('by') or 'edgedistill export'} on {accuracy.get('split')}, {accuracy.get('measured_on')}")
            checkpoint = checkpoint or accuracy.get("measured") == "checkpoint"
    found = [f"test top-1 of each row is that artifact's own, measured by {place}"
             for place in sorted(places)]
    if checkpoint:
        found.append("rows without a measured artifact accuracy show the PyTorch checkpoint's test top-1 "
                     "(an fp32 artifact reproduces it)")
    return found


def student_teacher_pairs(document: Dict[str, Any]) -> Dict[str, Tuple[Dict[str, Any], Dict[str, Any]]]:
    """(student row, teacher row) per backend and precision, as a label: "onnxruntime", "onnxruntime int8"
    (an int8 bundle's fp32 and int8 models are timed side by side; each is compared at its precision)."""
    rows: Dict[str, Dict[str, Dict[str, Any]]] = {}
    for result in document["results"]:
        precision = result.get("precision")
        label = result["backend"] if precision in (None, "fp32") else f"{result['backend']} {precision}"
        rows.setdefault(label, {})[result["model"]] = result
    return {label: (pair["student"], pair["teacher"]) for label, pair in rows.items() if {"student", "teacher"} <= pair.keys()}


def format_table(document: Dict[str, Any]) -> str:
    """The results as aligned columns, then the teacher/student speed-up and warnings."""
    headers, rows = latency_table([document], show_where=False)
    text = [headers] + [["-" if cell is None else cell for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in text) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in text]
    pairs = student_teacher_pairs(document)
    for label, (student, teacher) in pairs.items():
        ratio = teacher["latency_ms"]["median"] / student["latency_ms"]["median"]
        at = f" ({label})" if len(pairs) > 1 else ""
        lines.append(f"speed-up of the student over the teacher{at} (median latency): {ratio:.2f}x")
    env = document["environment"]
    lines.append(f"on {env['hostname']} ({env['machine']}, {env['cpu_model']}), governor {env['governor']}, {env['temperature_c']} °C")
    lines += [f"note: {note}" for note in accuracy_notes([document])]
    lines += [f"warning: {warning}" for warning in warnings([document])]
    return "\n".join(lines)
