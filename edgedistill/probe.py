"""``edgedistill probe``: step 0, before any training — which cheap student is worth it on a target?

Builds the teacher and each cheap variant of an architecture untrained (latency does not depend
on the weights), exports each through the real export pipeline once per backend (so every variant
ships in the form measured fastest with that backend, parity-checked, and compiled by it), then
times all variants interleaved on every backend that runs here, with the project's measuring method.
The result says, per backend: params, nominal and executed MACs, latency, speed-up over the
teacher, speed-up / MACs ratio, and the recommended kind.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from deploy.backends import open_runner
from deploy.bench import lowering_source, make_input
from deploy.env import environment_record, usable_cores
from deploy.manifest import Bundle
from deploy.measure import MeasureConfig, interleaved
from edgedistill.backends import get_backend
from edgedistill.cheap import CheapSpec, cheap_kinds, get_kind
from edgedistill.checkpoints import ModelCheckpoint, save_model_checkpoint
from edgedistill.errors import EdgeDistillError
from edgedistill.models import ModelSpec, create_model

DEFAULT_VARIANTS = ("teacher", "shift", "depthwise", "group:2", "group:4", "group:8")
TEACHER = "teacher"
PROBE_FORMAT = "edgedistill-probe/2"
REMOTE = "tvm-rpc"
"""The backend column of a probe timed on a board: TVM libraries, run through the RPC tracker."""


def parse_variant(text: str) -> CheapSpec | None:
    """``teacher`` -> None; ``shift``, ``depthwise`` -> that kind; ``group:4`` -> the kind with its
    first option (``groups``) set to 4."""
    if text == TEACHER:
        return None
    name, colon, value = text.partition(":")
    if not colon:
        return CheapSpec(name)
    options = get_kind(name).options
    if not options or not value:
        with_value = [k for k in cheap_kinds() if get_kind(k).options]
        raise EdgeDistillError(f"bad variant '{text}'", f"write teacher, a kind ({', '.join(cheap_kinds())}), or KIND:VALUE for "
                                                        f"a kind with an option ({', '.join(with_value) or 'none'}), e.g. group:4")
    return CheapSpec(name, **{options[0].name: value})


@dataclass
class ProbeOptions:
    target: str = "host"
    model: str = "resnet20"
    image_size: int = 32
    in_channels: int = 3
    num_classes: int = 10
    variants: tuple[str, ...] = DEFAULT_VARIANTS
    backends: tuple[str, ...] = ()
    """Empty: every backend of the probe's bundles that runs here."""
    threads: int | None = None
    tune_trials: int = 0
    config: MeasureConfig = field(default_factory=MeasureConfig)
    rpc_tracker: str | None = None
    """HOST:PORT of a TVM RPC tracker: time the variants' TVM libraries on a board of ``rpc_key``."""
    rpc_key: str | None = None
    rpc_wait_s: float = 60.0


@dataclass
class ProbeRow:
    variant: str
    model: str
    params: int
    macs: int
    executed_macs: dict[str, int]
    """Per backend: the MACs of the form it ships (a one-hot shift executes its K² taps)."""
    form: dict[str, str]
    """Per backend: the form of the cheap layers it ships (``edgedistill export --lowering``)."""
    form_how: dict[str, str]
    """Per backend: how that form was chosen (measured where, cached, or not measured and why)."""
    median_ms: dict[str, float]
    """Per backend."""
    speedup: dict[str, float]
    """Teacher's median over this variant's, per backend."""
    speedup_vs_macs: dict[str, float]


@dataclass
class ProbeResult:
    format: str
    target: str
    model: str
    input_shape: list[int]
    backends: list[str]
    threads: int
    rows: list[ProbeRow]
    recommended: dict[str, str]
    """Per backend: the cheap variant with the largest measured speed-up."""
    notes: list[str]
    environment: dict[str, Any]
    method: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _export_variant(label: str, spec: ModelSpec, backend: str, options: ProbeOptions, workdir: Path,
                    report: Callable[[str], None]) -> Path:
    """A bundle of ``backend`` holding the untrained ``spec`` (as its student, or as its teacher)."""
    from edgedistill.export.pipeline import ExportOptions, export_bundle

    role = "student" if spec.is_student else TEACHER
    # Parity is checked on real images where a dataset of that many channels is here, else on noise.
    data = {"name": "fashion-mnist" if options.in_channels == 1 else "cifar10", "num_classes": options.num_classes, "in_channels": options.in_channels,
            "image_size": options.image_size, "mean": [0.0] * options.in_channels, "std": [1.0] * options.in_channels,
            "class_names": [str(i) for i in range(options.num_classes)]}
    checkpoint = workdir / label / backend / f"{role}-best.pt"
    checkpoint.parent.mkdir(parents=True)
    save_model_checkpoint(checkpoint, ModelCheckpoint(spec, create_model(spec).state_dict(), data, {}, role))
    tvm = backend == "tvm"
    summary = export_bundle(checkpoint, ExportOptions(
        target=options.target, backend=backend, out=str(checkpoint.parent / "bundle"), models=(role,), parity_samples=4,
        tune_trials=options.tune_trials if tvm else 0,
        # a board target is tuned, and its forms timed, on the board it is timed on
        rpc_tracker=options.rpc_tracker if tvm else None, rpc_key=options.rpc_key if tvm else None,
    ), lambda message: report(f"{label} ({backend}): {message}"))
    return Path(summary.bundle)


def _backends_to_time(options: ProbeOptions, target: Any) -> tuple[list[str], list[str]]:
    """The target's backends whose code runs here (or those asked for: an error when one cannot), and notes on the others."""
    chosen, notes = [], []
    for name in options.backends or target.backends:
        if name not in target.backends:
            raise EdgeDistillError(f"target {target.name} has no {name} backend", f"its backends: {', '.join(target.backends)}")
        try:
            get_backend(name).check_toolchain(target)
        except EdgeDistillError as exc:
            if options.backends:
                raise
            notes.append(f"{name}: not timed ({exc.message})")
            continue
        chosen.append(name)
    return chosen, notes


def run_probe(options: ProbeOptions, report: Callable[[str], None] | None = None) -> ProbeResult:
    report = report or (lambda _m: None)
    if TEACHER not in options.variants:
        raise EdgeDistillError("the variants must include 'teacher'", "every speed-up is over the teacher")
    specs = {label: ModelSpec(options.model, options.num_classes, options.in_channels, cheap=parse_variant(label))
             for label in dict.fromkeys(options.variants)}
    for backend in options.backends:
        get_backend(backend)
    from edgedistill.export.targets import host_can_run, load_target

    target = load_target(options.target)
    if options.rpc_tracker:
        _check_remote(options, target)
    else:
        can_run, why = host_can_run(target)
        if not can_run:  # timing another machine's code here would answer the wrong question
            raise EdgeDistillError(f"probe times networks on this machine, and {why}",
                                   "time them on the board with --rpc-tracker HOST:PORT --rpc-key KEY, "
                                   "or pick a target this machine can run")
    threads = options.threads or usable_cores()
    exported, notes = (["tvm"], []) if options.rpc_tracker else _backends_to_time(options, target)
    with tempfile.TemporaryDirectory(prefix="edgedistill-probe-") as tmp:
        bundles = {label: {backend: Bundle.load(_export_variant(label, spec, backend, options, Path(tmp), report), force=True)
                           for backend in exported} for label, spec in specs.items()}
        first = next(iter(bundles[TEACHER].values()))
        if options.rpc_tracker:
            report(f"timing {len(bundles)} networks on a '{options.rpc_key}' board via {options.rpc_tracker}, interleaved")
            medians, environment = _time_on_board({label: by["tvm"] for label, by in bundles.items()}, options)
            notes = ["the board is emulated (qemu): its timings mean nothing, only parity and mechanics do"] \
                if environment.get("emulated") else []
            rows = [_row(label, {REMOTE: by["tvm"]}, medians, bundles[TEACHER]["tvm"]) for label, by in bundles.items()]
            return _result(options, first, [REMOTE], int(environment.get("threads") or target.threads or 1), rows, notes,
                           environment)
        runnable = []
        for name in exported:
            ok, why, hint = get_backend(name).runs_here(bundles[TEACHER][name])
            if ok:
                runnable.append(name)
            elif options.backends:
                raise EdgeDistillError(why, hint)
            else:
                notes.append(f"{name}: not timed ({why})")
        x = make_input(first.input_shape, first.input_dtype)
        medians: dict[str, dict[str, float]] = {label: {} for label in bundles}
        for backend in runnable:
            report(f"timing {len(bundles)} networks with {backend} ({threads} threads), interleaved")
            runners = {label: open_runner(backend, by[backend].artifact_path(by[backend].model_names()[0], backend), threads)
                       for label, by in bundles.items()}
            stats = interleaved({label: (lambda r=r: r.run(x)) for label, r in runners.items()}, options.config)
            for label, s in stats.items():
                medians[label][backend] = s.median_ms
            del runners
        rows = [_row(label, {b: by[b] for b in runnable}, medians, bundles[TEACHER][exported[0]]) for label, by in bundles.items()]
    return _result(options, first, runnable, threads, rows, notes, environment_record(threads))


def _result(options: ProbeOptions, first: Bundle, backends: list[str], threads: int, rows: list[ProbeRow], notes: list[str],
            environment: dict[str, Any]) -> ProbeResult:
    cheap = [r for r in rows if r.variant != TEACHER]
    recommended = {b: max(cheap, key=lambda r: (r.speedup[b], -r.macs)).variant for b in backends} if cheap else {}
    return ProbeResult(PROBE_FORMAT, first.target_name, options.model, list(first.input_shape), backends, threads, rows,
                       recommended, notes, environment, options.config.to_dict())


def _check_remote(options: ProbeOptions, target: Any) -> None:
    """Before any export: a board probe needs a key, TVM code, and a board registered at the tracker."""
    from edgedistill.bench.rpc import require_registered

    if not options.rpc_key:
        raise EdgeDistillError("--rpc-tracker needs --rpc-key (the board type, e.g. rpi4)")
    if "tvm" not in target.backends:
        raise EdgeDistillError(f"a board probe times TVM libraries, and target {target.name} has no tvm backend",
                               f"its backends: {', '.join(target.backends)}")
    if any(b != "tvm" for b in options.backends):
        raise EdgeDistillError("with --rpc-tracker the board runs the variants' TVM libraries only", "drop --backend, or pass --backend tvm")
    require_registered(options.rpc_tracker, options.rpc_key)


def _time_on_board(bundles: dict[str, Bundle], options: ProbeOptions) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """Every variant's TVM library loaded on one board, checked against onnxruntime here, timed there in alternating rounds."""
    from edgedistill.bench.remote import board_environment, load_checked, timed_rounds
    from edgedistill.bench.rpc import check_board_target, request_board

    assert options.rpc_tracker and options.rpc_key  # _check_remote
    first = next(iter(bundles.values()))
    x = make_input(first.input_shape, first.input_dtype)
    with request_board(options.rpc_tracker, options.rpc_key, wait_s=options.rpc_wait_s) as board:
        check_board_target(board, first.manifest.get("target") or {})
        remote = {label: load_checked(board, options.rpc_key, bundle, bundle.model_names()[0], x)[0]
                  for label, bundle in bundles.items()}
        stats = timed_rounds(remote, x, options.config)
        environment = board_environment(board, options.rpc_tracker, options.rpc_key)
    return {label: {REMOTE: float(s["median"])} for label, s in stats.items()}, environment


def _row(label: str, bundles: dict[str, Bundle], medians: dict[str, dict[str, float]], teacher: Bundle) -> ProbeRow:
    """``label``'s row: ``bundles`` holds its bundle per timed backend (each in that backend's form)."""
    entries = {b: bundle.model(bundle.model_names()[0]) for b, bundle in bundles.items()}
    forms = {b: _shipped_form(e, b) for b, e in entries.items()}
    entry = next(iter(entries.values()))
    teacher_entry = teacher.model(teacher.model_names()[0])
    speedup = {b: medians[TEACHER][b] / ms for b, ms in medians[label].items()}
    macs_ratio = teacher_entry["macs"] / entry["macs"]
    return ProbeRow(label, entry["model"], entry["params"], entry["macs"],
                    {b: f["executed_macs"] for b, f in forms.items()},
                    {b: f["form"] for b, f in forms.items()}, {b: f["how"] for b, f in forms.items()}, medians[label], speedup,
                    {b: s / macs_ratio for b, s in speedup.items()})


def _shipped_form(entry: dict[str, Any], backend: str) -> dict[str, Any]:
    """The form ``backend``'s timed code is in, how it was chosen and the MACs it executes."""
    source = lowering_source(entry, backend)
    chosen = source.get("lowering") or {"form": "trained", "how": "as trained"}
    return {"form": chosen["form"], "how": chosen.get("how", ""), "executed_macs": source.get("executed_macs", entry["macs"])}


def markdown(result: ProbeResult) -> str:
    lines = [f"# probe: {result.model} at {'×'.join(map(str, result.input_shape[1:]))} on {result.target}, "
             f"{result.threads} threads", ""]
    header = ["variant", "params", "MACs"]
    for b in result.backends:
        header += [f"{b} form", f"{b} executed MACs", f"{b} ms", f"{b} speed-up", f"{b} speed-up / MACs ratio"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in result.rows:
        cells = [r.variant, f"{r.params / 1e3:.1f} k", f"{r.macs / 1e6:.2f} M"]
        for b in result.backends:
            cells += [r.form[b], f"{r.executed_macs[b] / 1e6:.2f} M", f"{r.median_ms[b]:.3f}", f"{r.speedup[b]:.2f}×",
                      f"{r.speedup_vs_macs[b]:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", *[f"- recommended on {b}: **{v}**" for b, v in result.recommended.items()], *[f"- {n}" for n in result.notes]]
    return "\n".join(lines) + "\n"


def plot(result: ProbeResult, path: Path) -> None:
    """Speed-up over the teacher against the MACs ratio, one marker per variant and backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    teacher_macs = next(r.macs for r in result.rows if r.variant == TEACHER)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for marker, backend in zip("osD^v", result.backends):
        for r in result.rows:
            ax.scatter(teacher_macs / r.macs, r.speedup[backend], marker=marker, label=backend if r.variant == TEACHER else None)
            ax.annotate(r.variant, (teacher_macs / r.macs, r.speedup[backend]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    top = max(teacher_macs / r.macs for r in result.rows)
    ax.plot([1, top], [1, top], "k:", linewidth=0.8, label="speed-up = MACs ratio")
    ax.set_xlabel("MACs ratio (teacher / variant)")
    ax.set_ylabel("measured speed-up over the teacher")
    ax.set_title(f"{result.model} on {result.target}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
