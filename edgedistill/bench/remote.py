"""Latency of a bundle's TVM libraries on a remote board, through a TVM RPC tracker.

The student and teacher are uploaded to one board, their outputs are checked
against onnxruntime on this host, and they are timed by TVM's time evaluator on
the board (no network inside the timed region), in alternating rounds so both
see the same board state. Boards that are emulated are flagged: their timings
mean nothing, only the parity does.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from deploy.bench import bench_document, check_output, make_input, result_entry
from deploy.manifest import Bundle
from deploy.measure import MeasureConfig, summarize
from deploy.backends.onnxruntime_cpu import OnnxRuntimeRunner
from edgedistill.bench.rpc import Board, RemoteModel, check_board_target, request_board
from edgedistill.export.parity import compare, require

SAMPLES_PER_ROUND = 20


def timed_rounds(models: dict[str, RemoteModel], x: np.ndarray, config: MeasureConfig) -> dict[str, dict[str, Any]]:
    """Each model's latency statistics on the board, timed in alternating rounds."""
    first: dict[str, float] = {}
    samples: dict[str, list[float]] = {name: [] for name in models}
    min_runs: dict[str, int] = {}
    for round_index in range(config.repeats):
        for name, model in models.items():
            timing = model.time(
                [x],
                warmup_runs=config.warmup_runs if round_index == 0 else 1,
                warmup_s=config.warmup_seconds if round_index == 0 else 0.0,
                min_runs=math.ceil(config.min_runs / config.repeats),
                min_s=config.min_seconds / config.repeats,
                repeats=SAMPLES_PER_ROUND,
            )
            first.setdefault(name, timing.first_call_s)
            samples[name] += timing.repeat_times_s
            min_runs[name] = timing.min_runs_per_repeat
    stats = {}
    for name in models:
        summary = summarize(int(first[name] * 1e9), [int(t * 1e9) for t in samples[name]], config.repeats, config.cv_threshold)
        stats[name] = {**summary.to_dict(), "min_runs_per_sample": min_runs[name], "first_run_includes": "one RPC round trip"}
    return stats


def load_checked(board: Board, key: str, bundle: Bundle, model: str, x: np.ndarray) -> tuple[RemoteModel, dict[str, Any]]:
    """``model``'s TVM library of ``bundle`` loaded on the board, its output checked against onnxruntime here."""
    remote = board.load(bundle.artifact_path(model, "tvm"))
    out = check_output(model, remote.run([x])[0], bundle.output_shape)
    reference = OnnxRuntimeRunner(bundle.onnx_path(model), threads=1).run(x)
    return remote, require(compare(reference, out, ("onnxruntime (host)", f"tvm on board '{key}'"))).to_dict()


def board_environment(board: Board, tracker: str, key: str) -> dict[str, Any]:
    """The board's environment record, and how it was reached, for a report."""
    info = {k: v for k, v in board.info().items() if k != "cpu_flags"}  # the target check's, not the report's
    return {**info, "rpc": {"tracker": tracker, "key": key, "board": f"{board.address[0]}:{board.address[1]}"}}


def bench_remote(
    bundle: Bundle, tracker: str, key: str, models: list[str], config: MeasureConfig, wait_s: float = 60.0,
    check_board: bool = True,
) -> dict[str, Any]:
    """Run and time ``models`` of ``bundle`` (its TVM libraries) on a board of ``key``.

    The board's CPU architecture (and features) is checked against the bundle's target
    before anything is uploaded, unless ``check_board`` is off (``--force``).
    """
    x = make_input(bundle.input_shape, bundle.input_dtype)
    with request_board(tracker, key, wait_s=wait_s) as board:
        if check_board:
            check_board_target(board, bundle.manifest.get("target") or {})
        remote: dict[str, RemoteModel] = {}
        parity = {}
        for name in models:
            remote[name], parity[name] = load_checked(board, key, bundle, name, x)
        stats = timed_rounds(remote, x, config)
        environment = board_environment(board, tracker, key)
    results = []
    for name in models:
        entry = bundle.model(name)
        artifact = bundle.artifact_path(name, "tvm")
        results.append(result_entry(
            name, "tvm-rpc", environment.get("threads"), stats[name], {"file_bytes": artifact.stat().st_size}, entry,
            parity=parity[name], precision="fp32", artifact=bundle.relative(artifact),
        ))
    method = {**config.to_dict(), "timer": "tvm time_evaluator on the board; samples are means of at least min_runs_per_sample runs"}
    return bench_document(bundle, environment, method, results)
