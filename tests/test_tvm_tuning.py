"""TVM tuning: one database per target, safe commits, tuning through a board (bad input and, slow, the emulated board).

The fast tests never run MetaSchedule's search: they check the database layout, that an
interrupted run commits nothing, and that a bad tracker or key fails in seconds with one line.
The slow test tunes a tiny net through the emulated arm64 board (qemu): candidates are
cross-compiled here and measured there; its timings mean nothing and are never shown as real.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from cli_helpers import assert_one_error, run_cli
from tiny_nets import SHAPE, tiny_onnx
from edgedistill.backends.tvm import tuning
from edgedistill.bench import rpc
from edgedistill.export.targets import load_target

pytest.importorskip("tvm", reason="Apache TVM is not installed (pip install 'edgedistill[tvm]')")

KEY = "tuning-test"


def reference(onnx_path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- the database ----------------------------------------------------------------------------------


def test_one_database_per_target_and_tvm_version_whatever_the_model_or_budget(tmp_path: Path) -> None:
    rpi4, host = load_target("rpi4").tvm_cpu_target, {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "x86-64"}
    one = tuning.database_dir(tmp_path, "rpi4", rpi4, "0.27.0")
    assert tuning.database_dir(tmp_path, "rpi4", dict(rpi4), "0.27.0") == one  # no graph, no budget in the key
    assert tuning.database_dir(tmp_path, "rpi4", {**rpi4, "num-cores": 2}, "0.27.0") != one
    assert tuning.database_dir(tmp_path, "rpi4", rpi4, "0.28.0") != one
    assert tuning.database_dir(tmp_path, "host", host, "0.27.0").name.startswith("host-")
    assert tuning.read_meta(one) is None and tuning.committed_records(one) is None  # nothing there: nothing finished


def test_an_interrupted_tuning_run_commits_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run writes records into its work directory, then is interrupted: no generation, no metadata, no work dir."""
    from edgedistill.backends.tvm.compile import compile_onnx

    path = tiny_onnx(tmp_path / "tiny.onnx")

    def interrupted(tasks, needs, total, target, work_dir, report, board, linker):  # noqa: ANN001, ANN202
        (work_dir / tuning.RECORDS_FILE).write_text('[0, ["half a record')  # what a killed run leaves
        (work_dir / tuning.WORKLOADS_FILE).write_text("")
        raise KeyboardInterrupt

    monkeypatch.setattr(tuning, "_tune", interrupted)
    with pytest.raises(KeyboardInterrupt):
        compile_onnx(path, load_target("host"), tmp_path / "m.so", input_name="input", input_shape=SHAPE, tune_trials=4,
                     tuning_dir=tmp_path / "db")
    (db,) = (tmp_path / "db").iterdir()
    assert tuning.read_meta(db) is None and not list(db.glob("gen-*")) and not list((db / tuning.WORK_DIR).iterdir())
    assert not (tmp_path / "m.so").exists()
    # A metadata file that names a generation which is not there is not a finished database either.
    (db / tuning.META_FILE).write_text('{"format": "%s", "generation": "gen-x"}' % tuning.META_FORMAT)
    assert tuning.read_meta(db) is None


def test_tuning_survives_an_unnamed_handler_on_metaschedules_logger(tmp_path: Path) -> None:
    """MetaSchedule's logging setup lists its logger's handlers by name; an unnamed one (seen on a
    fresh machine) made every later tuning run fail with "'NoneType' object has no attribute 'format'"."""
    import logging

    from edgedistill.backends.tvm.compile import compile_onnx

    stray = logging.StreamHandler()
    logging.getLogger(tuning.MS_LOGGER).addHandler(stray)
    try:
        artifact = compile_onnx(tiny_onnx(tmp_path / "tiny.onnx"), load_target("host"), tmp_path / "m.so", input_name="input",
                                input_shape=SHAPE, tune_trials=2, tuning_dir=tmp_path / "db")
    finally:
        logging.getLogger(tuning.MS_LOGGER).removeHandler(stray)
    assert artifact.tuned_trials == 2 and not artifact.tuning_reused


def test_metaschedules_tables_stay_out_of_the_console(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Each tune context reruns MetaSchedule's logging setup, which turned its console handler up to
    DEBUG: from the second task on, its INFO tables went to stdout. Two tasks here (conv, matmul)."""
    from edgedistill.backends.tvm.compile import compile_onnx

    artifact = compile_onnx(tiny_onnx(tmp_path / "tiny.onnx"), load_target("host"), tmp_path / "m.so", input_name="input",
                            input_shape=SHAPE, tune_trials=4, tuning_dir=tmp_path / "db")
    assert artifact.tuning_details["tasks"] == 2
    out, err = capsys.readouterr()
    assert "[INFO]" not in out + err and "Postproc" not in out + err


# -- bad input: bounded time, one line -------------------------------------------------------------


@pytest.fixture(scope="module")
def tracker() -> Iterator[rpc.TrackerProcess]:
    with rpc.start_tracker(lifetime_s=300) as proc:
        yield proc


def _export(run: Path, tmp_path: Path, *args: str):  # noqa: ANN202
    return run_cli(["export", str(run), "--model", "student", "--backend", "tvm", "--out", str(tmp_path / "b"),
                    "--parity-samples", "4", "--tuning-dir", str(tmp_path / "db"), *args])


@pytest.mark.parametrize(("args", "message"), [
    (["--rpc-tracker", "127.0.0.1:9190"], "--rpc-tracker needs --rpc-key"),
    (["--rpc-key", "rpi4"], "--rpc-key needs --rpc-tracker"),
    (["--rpc-tracker", "127.0.0.1:9190", "--rpc-key", "rpi4", "--tune-trials", "0", "--lowering", "trained"],
     "neither was asked for"),
    (["--rpc-tracker", "nonsense", "--rpc-key", "rpi4", "--tune-trials", "4"], "HOST:PORT"),
])
def test_tracker_flags_without_what_they_need_are_refused(mutual_run: Path, tmp_path: Path, args: list[str], message: str) -> None:
    assert_one_error(_export(mutual_run, tmp_path, *args), message)
    assert not (tmp_path / "b").exists() and not (tmp_path / "db").exists()


def test_tracker_flags_with_another_backend_are_refused(mutual_run: Path, tmp_path: Path) -> None:
    result = run_cli(["export", str(mutual_run), "--backend", "onnxruntime", "--out", str(tmp_path / "b"),
                      "--rpc-tracker", "127.0.0.1:9190"])
    assert_one_error(result, "--rpc-tracker applies to the tvm backend only")


def test_an_unreachable_tracker_fails_in_seconds(mutual_run: Path, tmp_path: Path) -> None:
    start = time.perf_counter()
    result = _export(mutual_run, tmp_path, "--tune-trials", "4", "--rpc-tracker", f"127.0.0.1:{free_port()}", "--rpc-key", "x")
    assert_one_error(result, "cannot tune through the RPC tracker", "cannot reach the RPC tracker")
    assert time.perf_counter() - start < 60  # the export's own checks included; the tracker check is ~0 s
    assert not (tmp_path / "b").exists() and not (tmp_path / "db").exists()


def test_a_key_with_no_board_fails_in_seconds_naming_the_keys(mutual_run: Path, tmp_path: Path, tracker) -> None:
    host, port = tracker.address
    start = time.perf_counter()
    result = _export(mutual_run, tmp_path, "--tune-trials", "4", "--rpc-tracker", f"{host}:{port}", "--rpc-key", "rpi4")
    assert_one_error(result, "no board is registered under key 'rpi4'", "registered keys: none")
    assert time.perf_counter() - start < 60
    assert not (tmp_path / "b").exists() and not (tmp_path / "db").exists()


def test_a_busy_board_fails_after_a_short_wait(mutual_run: Path, tmp_path: Path, tracker) -> None:
    with rpc.start_server(tracker.address, KEY, lifetime_s=120) as server, rpc.request_board(tracker.address, KEY, wait_s=30):
        assert server.address  # held by this test: the key has a board, none is free
        start = time.perf_counter()
        result = _export(mutual_run, tmp_path, "--tune-trials", "4", "--rpc-tracker", "%s:%d" % tracker.address, "--rpc-key", KEY)
        elapsed = time.perf_counter() - start
    assert_one_error(result, f"no free board under key '{KEY}'", "busy")
    assert elapsed < 60
    assert not (tmp_path / "b").exists() and not (tmp_path / "db").exists()


# -- through the emulated arm64 board --------------------------------------------------------------


@pytest.mark.slow
def test_tuning_through_the_emulated_board_is_measured_there_reused_and_correct(tmp_path: Path) -> None:
    """2 trials (one per task) and the conv task's default tiles measured on the qemu board; a second export reuses them without a
    board; the tuned library matches onnxruntime on the board. ~1-2 min on 2 cores."""
    from toolchain_support import need_emulated_board

    need_emulated_board()
    from edgedistill.backends.tvm.compile import compile_onnx
    from edgedistill.bench import emulated_board

    rpi4 = load_target("rpi4")
    first_onnx, second_onnx = tiny_onnx(tmp_path / "a.onnx", seed=0), tiny_onnx(tmp_path / "b.onnx", seed=1)
    db_root = tmp_path / "db"
    x = np.random.default_rng(3).standard_normal(SHAPE).astype(np.float32)
    with (
        emulated_board.start_tracker(lifetime_s=600) as tracker,
        emulated_board.start_board(*tracker.address, "rpi4-emulated", lifetime_s=600),
    ):
        board = tuning.check_board(tuning.BoardRunner(tracker.address, "rpi4-emulated"), rpi4.arch)
        assert board.emulated
        messages: list[str] = []
        first = compile_onnx(first_onnx, rpi4, tmp_path / "a.so", input_name="input", input_shape=SHAPE, tune_trials=2,
                             tuning_dir=db_root, tuning_board=board, progress=messages.append)
        assert not first.tuning_reused and first.tuning_details["measured_now"] == 3  # + the conv task's default tiles
        assert "emulated" in first.tuning_details["measured_on"]
        assert any("2/2 trials measured" in m for m in messages)
        assert any("measuring the default tiles of 1 conv tasks" in m for m in messages)
        meta = tuning.read_meta(first.tuning_database)
        assert meta["runs"][-1]["trials"] == 3 and meta["runs"][-1]["timings_meaningful"] is False
        assert {w["task"] for w in meta["workloads"].values()} == {"fused_conv2d_add_relu", "fused_matmul_add1"}
        records = tuning.committed_records(first.tuning_database).read_text().splitlines()
        assert len(records) == 3  # one searched candidate per task and the conv task's seed, all from the board

        # Other weights, same shapes, no board: rpi4 cannot be tuned here, but the database has all it needs.
        start = time.perf_counter()
        second = compile_onnx(second_onnx, rpi4, tmp_path / "b.so", input_name="input", input_shape=SHAPE, tune_trials=2,
                              tuning_dir=db_root)
        assert time.perf_counter() - start < 30
        assert second.tuning_reused and second.tuning_database == first.tuning_database
        assert second.tuning_details["measured_now"] == 0
        assert tuning.committed_records(first.tuning_database).read_text().splitlines() == records
        assert tuning.read_meta(first.tuning_database)["runs"] == meta["runs"]

        with rpc.request_board(tracker.address, "rpi4-emulated", wait_s=60) as remote:
            (out,) = remote.load(second.path).run([x])
    np.testing.assert_allclose(out, reference(second_onnx, x), atol=1e-4, rtol=1e-4)
