"""One report from many benchmark documents: rows, student-vs-teacher comparisons, JSON, markdown.

A document is what ``deploy.bench`` (on the host or a board), the PyTorch
reference or the RPC bench produced (format ``edgedistill-bench/1``); device
results come in through ``edgedistill bench --import``.

Saving (:func:`save_report`): every run gets its own directory, ``OUT/<UTC time>/``
(``report.json``, ``report.md``, ``accuracy-latency.png`` unless ``--no-plot``), filled in a
temporary directory and renamed into place, so a report is complete or absent and never mixes
runs. ``OUT/latest`` is a relative symlink to the newest (``OUT/latest.json`` names it where the
filesystem has no symlinks), and ``OUT/report.json`` etc. are symlinks through ``latest``, so
the paths of the old flat layout still read the newest report. Earlier reports are kept; files
bench did not write are never replaced or deleted.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from deploy import BENCH_FORMAT
from deploy.report import accuracy_notes, latency_table, student_teacher_pairs, thread_sweep, threads_label, warnings, where
from deploy.atomic import current_umask
from edgedistill.errors import EdgeDistillError

REPORT_FORMAT = "edgedistill-report/1"


@dataclass(frozen=True)
class Comparison:
    where: str
    backend: str
    """The backend (and precision); with its thread count where the rows ran at several."""
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


def load_document(path: str | Path, formats: tuple[str, ...] = (BENCH_FORMAT,)) -> dict[str, Any]:
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise EdgeDistillError(f"result file not found: {path}", "pass the JSON written by 'python3 -m deploy.run bench'") from None
    except json.JSONDecodeError as exc:
        raise EdgeDistillError(f"{path} is not valid JSON ({exc.msg}, line {exc.lineno})", "copy the file again from the device") from None
    if not isinstance(document, dict) or document.get("format") not in formats or "results" not in document:
        raise EdgeDistillError(f"{path} is not an edgedistill benchmark result", f"expected format {' or '.join(formats)}")
    return document


def load_imports(paths: list[str] | tuple[str, ...]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``--import`` files: benchmark documents (``deploy.run bench``) and evaluations (``deploy.run eval``)."""
    from deploy.evaluate import EVAL_FORMAT

    loaded = [load_document(p, (BENCH_FORMAT, EVAL_FORMAT)) for p in paths]
    return [d for d in loaded if d["format"] == BENCH_FORMAT], [d for d in loaded if d["format"] == EVAL_FORMAT]


def merge_evaluations(documents: list[dict[str, Any]], evaluations: list[dict[str, Any]]) -> None:
    """Put the top-1 ``deploy.run eval`` measured on a device onto every row that timed the same
    artifact of the same bundle; an evaluation that matches no row is an error, not silently dropped."""
    for evaluation in evaluations:
        env, subset = evaluation["environment"], evaluation["subset"]
        matched = 0
        for result in evaluation["results"]:
            for document in documents:
                if (document.get("bundle") or {}).get("created") != evaluation["bundle"].get("created"):
                    continue
                for row in document["results"]:
                    if row.get("artifact") != result["artifact"]:
                        continue
                    row["accuracy"] = {**(row.get("accuracy") or {}), "test_top1": result["test_top1"]}
                    row["accuracy_source"] = {
                        "measured": "artifact", "by": "deploy.run eval", "measured_on": f"{env.get('hostname')} ({env.get('machine')})",
                        "images": result["images"], "split": f"the bundle's test subset ({subset.get('split')})",
                        "precision": result.get("precision"), "backend": result.get("backend"),
                    }
                    matched += 1
        if not matched:
            raise EdgeDistillError(
                f"the evaluation from {env.get('hostname')} matches no timed artifact of this report",
                "import it with the bundle it was measured on (edgedistill bench BUNDLE --import eval.json), "
                "or with that bundle's deploy.run bench result")


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def _top1(result: dict[str, Any]) -> float | None:
    return (result.get("accuracy") or {}).get("test_top1")


def compare_documents(documents: list[dict[str, Any]]) -> list[Comparison]:
    comparisons = []
    sweep = thread_sweep(documents)
    for document in documents:
        for backend, (s, t) in student_teacher_pairs(document).items():
            if sweep and s.get("threads") is not None:  # the same backend at several thread counts
                backend = f"{backend}, {threads_label(s['threads'])}"
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


# --- saving: one directory per run, a ``latest`` pointer, nothing of anyone else's touched -------

REPORT_FILES = ("report.json", "report.md", "accuracy-latency.png")
LATEST = "latest"
"""``OUT/latest``: a relative symlink to the newest report directory (``latest.json`` where the
filesystem has no symlinks)."""
LATEST_JSON = "latest.json"
LATEST_FORMAT = "edgedistill-report-latest/1"
_STAMP = re.compile(r"^\d{8}T\d{6}Z(-\d+)?$")


def report_stamp(when: dt.datetime | None = None) -> str:
    """The name of a report directory: its UTC time, e.g. ``20250102T030405Z``."""
    return (when or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


@dataclass
class SavedReport:
    """What :func:`save_report` wrote and what it kept."""

    root: Path
    """The --out directory: one sub-directory per report."""
    directory: Path
    """This report's directory, ``root/<UTC time>``, complete or absent (renamed into place)."""
    files: list[Path]
    latest: Path | None
    """The pointer updated to this report (``root/latest`` or ``root/latest.json``); None if not ours to update."""
    earlier: list[Path] = field(default_factory=list)
    """Earlier report directories in ``root``, kept, oldest first."""
    moved: list[Path] = field(default_factory=list)
    """Files of an earlier report in the old flat layout (``root/report.json`` ...), moved into their own directory."""
    links: list[Path] = field(default_factory=list)
    """``root/report.json`` etc.: symlinks through ``latest`` to this report's files (the old paths keep working)."""
    notes: list[str] = field(default_factory=list)
    """Anything left alone because bench did not write it."""

    def describe(self) -> list[str]:
        """Lines for the console: what was written, where ``latest`` points, what was kept."""
        names = ", ".join(p.name for p in self.files)
        lines = [f"report: {self.directory}/ ({names})"]
        if self.latest is not None:
            lines.append(f"latest: {self.latest} -> {self.directory.name}" + (
                f"; {', '.join(p.name for p in self.links)} in {self.root} follow it" if self.links else ""))
        if self.earlier:
            lines.append(f"kept {len(self.earlier)} earlier report(s) in {self.root}/ (the previous: {self.earlier[-1].name})")
        else:
            lines.append(f"no earlier report in {self.root}/")
        if not any(p.name == "accuracy-latency.png" for p in self.files):
            lines.append("no plot in this report (--no-plot)")
        if self.moved:
            lines.append(f"moved an earlier report of the old layout into {self.moved[0].parent}/ "
                         f"({', '.join(p.name for p in self.moved)})")
        return lines + [f"note: {note}" for note in self.notes]


def _nearest_existing(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not os.path.lexists(path):
        path = path.parent
    return path


def check_report_dir(out_dir: Path) -> None:
    """Fail now, before anything is measured, when reports cannot be written into ``out_dir``.

    Creates nothing that stays: the check makes and removes one empty directory.
    """
    out_dir = Path(out_dir)
    hint = "pass --out DIR in a writable place (nothing was measured)"
    if os.path.lexists(out_dir) and not out_dir.is_dir():
        raise EdgeDistillError(f"cannot write the report to {out_dir}: it exists and is not a directory", hint)
    existing = _nearest_existing(out_dir)
    if not existing.is_dir():
        raise EdgeDistillError(f"cannot write the report to {out_dir}: {existing} is not a directory", hint)
    try:
        probe = tempfile.mkdtemp(prefix=".edgedistill-probe-", dir=existing)
        os.rmdir(probe)
    except OSError as exc:
        raise EdgeDistillError(f"cannot write the report to {out_dir}: {existing}: {exc.strerror or exc}", hint) from None


def _is_report_dir(path: Path) -> bool:
    return bool(_STAMP.match(path.name)) and path.is_dir() and not path.is_symlink() and (path / "report.json").is_file()


def _ours_symlink(path: Path, target: str | None = None) -> bool:
    """``path`` is a symlink bench made: to a report directory (``target`` None) or exactly to ``target``."""
    if not path.is_symlink():
        return False
    pointed = os.readlink(path)
    return pointed == target if target is not None else bool(_STAMP.match(pointed))


def _ours_latest_json(path: Path) -> bool:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("format") == LATEST_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _free_name(root: Path, stamp: str) -> Path:
    candidate, n = root / stamp, 1
    while os.path.lexists(candidate):
        n += 1
        candidate = root / f"{stamp}-{n}"
    return candidate


def _move_flat_report(root: Path) -> list[Path]:
    """An earlier bench wrote report.json/report.md/accuracy-latency.png straight into ``root``:
    move them (only when report.json is really ours) into a directory of their own, named by time."""
    flat = root / "report.json"
    if flat.is_symlink() or not flat.is_file():
        return []
    try:
        if json.loads(flat.read_text(encoding="utf-8")).get("format") != REPORT_FORMAT:
            return []
    except (OSError, ValueError, AttributeError):
        return []
    when = flat.stat().st_mtime
    target = _free_name(root, report_stamp(dt.datetime.fromtimestamp(when, dt.timezone.utc)))
    target.mkdir()
    moved = []
    for name in REPORT_FILES:
        path = root / name
        # the plot is moved with them only when written in the same run (the old --no-plot left a stale one)
        if path.is_file() and not path.is_symlink() and (name != "accuracy-latency.png" or abs(path.stat().st_mtime - when) < 120):
            os.replace(path, target / name)
            moved.append(target / name)
    return moved


def _symlink_atomic(link: Path, target: str) -> None:
    tmp = link.with_name(f".{link.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    os.symlink(target, tmp)
    try:
        os.replace(tmp, link)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def save_report(documents: list[dict[str, Any]], out_dir: Path, plot: bool = True,
                when: dt.datetime | None = None) -> SavedReport:
    """Write one report as a set: ``out_dir/<UTC time>/`` (report.json, report.md and, with
    ``plot``, accuracy-latency.png) is filled in a temporary directory and renamed into place,
    then ``out_dir/latest`` is pointed at it (one atomic rename). Earlier reports stay where they
    are; an earlier report of the old flat layout is moved into a directory of its own. Files that
    bench did not write are never touched: a ``latest`` or ``report.json`` of someone else's is
    left alone (and said so in ``notes``).
    """
    from edgedistill.utils.atomic import write_json_atomic, write_text_atomic

    root = Path(out_dir)
    created = [p for p in [root, *root.parents] if not os.path.lexists(p)]
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".report-", suffix=".tmp", dir=root))
    try:
        os.chmod(tmp, 0o777 & ~current_umask())
        write_json_atomic(tmp / "report.json", report_document(documents))
        write_text_atomic(tmp / "report.md", markdown(documents))
        if plot:
            from edgedistill.bench.plot import plot_accuracy_latency  # matplotlib, only when asked for

            plot_accuracy_latency(documents, tmp / "accuracy-latency.png")
        names = [name for name in REPORT_FILES if (tmp / name).is_file()]
        stamp = report_stamp(when)
        while True:
            directory = _free_name(root, stamp)
            try:
                os.rename(tmp, directory)
                break
            except OSError as exc:  # another bench took the name just now
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for path in created:  # the directories this call made, if still empty: nothing half-written stays
            with contextlib.suppress(OSError):
                path.rmdir()
        raise
    saved = SavedReport(root, directory, [directory / name for name in names], None)
    try:
        saved.moved = _move_flat_report(root)
    except OSError as exc:
        saved.notes.append(f"could not move the earlier report in {root} aside ({exc.strerror or exc}); it is left as it was")
    saved.earlier = sorted(p for p in root.iterdir() if p != directory and _is_report_dir(p))
    _point_latest(saved, root, directory)
    return saved


def _point_latest(saved: SavedReport, root: Path, directory: Path) -> None:
    latest = root / LATEST
    if os.path.lexists(latest) and not _ours_symlink(latest):
        saved.notes.append(f"{latest} was not written by edgedistill bench: left alone, so it does not point at this report")
        return
    try:
        _symlink_atomic(latest, directory.name)
    except OSError:  # no symlinks on this filesystem: a small pointer file instead
        pointer = root / LATEST_JSON
        if os.path.lexists(pointer) and not _ours_latest_json(pointer):
            saved.notes.append(f"{pointer} was not written by edgedistill bench: left alone")
            return
        from edgedistill.utils.atomic import write_json_atomic

        write_json_atomic(pointer, {"format": LATEST_FORMAT, "latest": directory.name,
                                    "files": [p.name for p in saved.files]})
        saved.latest = pointer
        return
    saved.latest = latest
    # The old paths (root/report.json ...) as symlinks through latest: they switch with it, all at once.
    for name in REPORT_FILES:
        link, target = root / name, f"{LATEST}/{name}"
        ours = _ours_symlink(link, target)
        if os.path.lexists(link) and not ours:
            saved.notes.append(f"{link} was not written by edgedistill bench: left alone")
        elif (directory / name).is_file():
            if not ours:
                with contextlib.suppress(OSError):
                    _symlink_atomic(link, target)
            if _ours_symlink(link, target):
                saved.links.append(link)
        elif ours:  # this report has no such file (--no-plot): no link to an older one
            with contextlib.suppress(OSError):
                link.unlink()


def write_report(documents: list[dict[str, Any]], out_dir: Path, plot: bool = True) -> list[Path]:
    """:func:`save_report`, returning the files written (``out_dir/<UTC time>/...``)."""
    return save_report(documents, out_dir, plot).files


def notes(documents: list[dict[str, Any]]) -> list[str]:
    """What a reader must know to read these figures right."""
    results = [r for document in documents for r in document["results"]]
    found = accuracy_notes(documents)
    if any(r["backend"] == "tvm-rpc" for r in results):
        found.append("tvm-rpc rows are timed on the board by TVM's time evaluator; their percentiles and cv are over "
                     "means of several runs, so they spread less than per-call figures.")
    if any(r["backend"].startswith("tvm") and r.get("tvm_tuning_trials") == 0 for r in results):
        found.append("the TVM code is untuned: its kernels run edgedistill's default schedules (fixed conv tiles), not tiles "
                     "measured on this device; export with --tune-trials 256 (the host target's default) or more, on "
                     "the target, before comparing TVM.")
    return found


def markdown(documents: list[dict[str, Any]]) -> str:
    """The latency table (every column) and the comparisons as markdown (for READMEs and notes)."""
    headers, rows = latency_table(documents)
    lines = ["| " + " | ".join(headers) + " |", "|---|---|---|" + "---:|" * (len(headers) - 3)]
    lines += ["| " + " | ".join("—" if cell is None else cell for cell in row) + " |" for row in rows]
    for warning in warnings(documents):
        lines += ["", f"Warning: {warning}"]
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


def _fmt(value: float | None, unit: str = "") -> str:
    return "—" if value is None else f"{value:.2f}{unit}"
