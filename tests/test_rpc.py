"""TVM RPC on this host: a tracker and two ``deploy.rpc_server`` boards on 127.0.0.1.

Everything runs in child processes that stop by themselves (lifetimes) and are
killed at teardown; every wait is bounded.
"""

from __future__ import annotations

import platform
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from deploy.rpc_protocol import BOARD_INFO_FUNC
from edgedistill.bench import rpc
from edgedistill.export.targets import load_target

KEY = "x86-test"
LIFETIME_S = 180.0


def tiny_conv_onnx(path: Path) -> Path:
    """Conv -> ReLU -> depthwise conv -> shift (Pad + Slice) -> 1x1 conv -> global pool."""
    rng = np.random.default_rng(0)
    weights = {
        "w1": rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3,
        "w2": rng.standard_normal((8, 1, 3, 3)).astype(np.float32) * 0.3,
        "w3": rng.standard_normal((4, 8, 1, 1)).astype(np.float32) * 0.3,
        "pads": np.array([0, 0, 1, 0, 0, 0, 0, 0], dtype=np.int64),
        "starts": np.array([0], dtype=np.int64),
        "ends": np.array([8], dtype=np.int64),
        "axes": np.array([2], dtype=np.int64),
    }
    nodes = [
        helper.make_node("Conv", ["input", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], group=8),
        helper.make_node("Pad", ["c2", "pads"], ["padded"]),
        helper.make_node("Slice", ["padded", "starts", "ends", "axes"], ["shifted"]),
        helper.make_node("Conv", ["shifted", "w3"], ["c3"]),
        helper.make_node("GlobalAveragePool", ["c3"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny net as ONNX, and compiled by TVM for this host as .so and .tar."""
    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    work = tmp_path_factory.mktemp("rpc")
    onnx_path = tiny_conv_onnx(work / "tiny.onnx")
    mod = from_onnx(onnx.load(onnx_path), shape_dict={"input": [1, 3, 8, 8]})
    ex = tvm.compile(mod, tvm.target.Target({"kind": "llvm"}))
    ex.export_library(str(work / "tiny.so"))
    ex.export_library(str(work / "tiny.tar"))
    return {"onnx": onnx_path, "so": work / "tiny.so", "tar": work / "tiny.tar"}


@pytest.fixture(scope="module")
def tracker() -> Iterator[rpc.TrackerProcess]:
    with rpc.start_tracker(lifetime_s=LIFETIME_S) as proc:
        yield proc


@pytest.fixture(scope="module")
def boards(tracker: rpc.TrackerProcess) -> Iterator[list[rpc.ServerProcess]]:
    """Two boards under one key, started side by side."""
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(rpc.start_server, tracker.address, KEY, lifetime_s=LIFETIME_S) for _ in range(2)]
        servers = [f.result() for f in futures]
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.fixture()
def sample() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)


def reference(onnx_path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def test_remote_run_matches_onnxruntime(tracker, boards, compiled, sample) -> None:
    with rpc.request_board(tracker.address, KEY, wait_s=30) as board:
        outputs = board.load(compiled["so"]).run([sample])
        info = board.info()
    assert len(outputs) == 1 and outputs[0].shape == (1, 4)
    np.testing.assert_allclose(outputs[0], reference(compiled["onnx"], sample), atol=1e-5, rtol=1e-5)
    assert info["machine"] == platform.machine() and info["emulated"] is False


def test_tar_module_is_linked_on_the_board(tracker, boards, compiled, sample) -> None:
    with rpc.request_board(tracker.address, KEY, wait_s=30) as board:
        outputs = board.load(compiled["tar"]).run([sample])
    np.testing.assert_allclose(outputs[0], reference(compiled["onnx"], sample), atol=1e-5, rtol=1e-5)


def test_remote_time_evaluator_gives_positive_per_repeat_times(tracker, boards, compiled, sample) -> None:
    with rpc.request_board(tracker.address, KEY, wait_s=30) as board:
        model = board.load(compiled["so"])
        start = time.perf_counter()
        timing = model.time([sample], warmup_runs=1, warmup_s=0.0, min_runs=40, min_s=0.1, repeats=20)
        elapsed = time.perf_counter() - start
    assert len(timing.repeat_times_s) == 20
    assert all(0 < t < 1.0 for t in timing.repeat_times_s)
    assert timing.min_runs_per_repeat >= 2  # >= 40 runs in 20 repeats
    # The timed repeats last the requested 0.1 s at least, whatever the machine's load did to the
    # warm-up's estimate (TVM lengthens short repeats); the host clock sees it, with slack for granularity.
    assert elapsed >= 0.09
    assert timing.first_call_s > 0 and timing.emulated is False


def test_two_boards_under_one_key_share_the_load(tracker, boards, compiled, sample) -> None:
    expected = reference(compiled["onnx"], sample)
    first = rpc.request_board(tracker.address, KEY, wait_s=30)
    second = rpc.request_board(tracker.address, KEY, wait_s=30)  # the first board is busy
    try:
        assert {first.address[1], second.address[1]} == {s.address[1] for s in boards}
        models = [first.load(compiled["so"]), second.load(compiled["so"])]
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(lambda m: m.run([sample])[0], models))
        for out in results:
            np.testing.assert_allclose(out, expected, atol=1e-5, rtol=1e-5)
        start = time.monotonic()
        with pytest.raises(rpc.RPCError, match="no free board") as err:
            rpc.request_board(tracker.address, KEY, wait_s=1.0)
        assert time.monotonic() - start < 6.0
        assert "all 2 board(s)" in str(err.value)
    finally:
        first.close()
        second.close()
    # A closed session frees its board: it registers again and can be had.
    with rpc.request_board(tracker.address, KEY, wait_s=30) as again:
        assert again.address[1] in {s.address[1] for s in boards}


def test_key_without_board_times_out_with_a_clear_error(tracker, boards) -> None:
    start = time.monotonic()
    with pytest.raises(rpc.RPCError) as err:
        rpc.request_board(tracker.address, "x86-tset", wait_s=1.0)
    assert time.monotonic() - start < 6.0
    text = str(err.value)
    assert "no free board under key 'x86-tset'" in text and f"did you mean '{KEY}'" in text


def test_expired_session_gives_a_clear_error_and_frees_the_board(tracker, boards, compiled, sample) -> None:
    with rpc.request_board(tracker.address, KEY, wait_s=30, session_timeout_s=1.5) as board:
        model = board.load(compiled["so"])
        time.sleep(3.0)  # the board ends the session after 1.5 s
        with pytest.raises(rpc.RPCError, match=r"running the model on board .* failed: RPCSessionTimeoutError"):
            model.run([sample])
    start = time.monotonic()
    with (
        rpc.request_board(tracker.address, KEY, wait_s=30) as first,
        rpc.request_board(tracker.address, KEY, wait_s=30),
    ):
        assert first.address[1] in {s.address[1] for s in boards}
    assert time.monotonic() - start < 10.0  # both boards are free again


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_tracker_fails_fast() -> None:
    start = time.monotonic()
    with pytest.raises(rpc.RPCError, match="cannot reach the RPC tracker"):
        rpc.request_board(("127.0.0.1", _free_port()), KEY, wait_s=30)
    assert time.monotonic() - start < 6.0


def test_bad_tracker_address_is_refused() -> None:
    with pytest.raises(rpc.RPCError, match="HOST:PORT"):
        rpc.request_board("localhost", KEY)


def test_module_that_does_not_load_gives_a_clear_error(tracker, boards, tmp_path) -> None:
    bogus = tmp_path / "model.so"
    bogus.write_bytes(b"not a shared library")
    with rpc.request_board(tracker.address, KEY, wait_s=30) as board:
        with pytest.raises(rpc.RPCError, match=r"could not load model\.so"):
            board.load(bogus)
        with pytest.raises(rpc.RPCError, match="not found"):
            board.load(tmp_path / "missing.so")


def test_standalone_server_stops_after_max_sessions(compiled, sample) -> None:
    """Without a tracker: connect directly; --max-sessions 1 ends the server after it."""
    import tvm.rpc

    proc = rpc.ServerProcess(
        [
            sys.executable,
            "-m",
            "deploy.rpc_server",
            "--key",
            "direct",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--max-sessions",
            "1",
            "--timeout",
            "120",
        ],
        "standalone server",
        env=rpc.child_env(),
    )
    with proc:
        port = int(proc.read_line(60).rpartition(":")[2])
        session = tvm.rpc.connect("127.0.0.1", port, "direct", session_timeout=60)
        board = rpc.Board(session=session, key="direct", address=("127.0.0.1", port))
        out = board.load(compiled["so"]).run([sample])[0]
        board.close()
        del session
        assert proc.proc.wait(30) == 0
    np.testing.assert_allclose(out, reference(compiled["onnx"], sample), atol=1e-5, rtol=1e-5)


def test_server_stops_by_itself_at_its_lifetime(tracker) -> None:
    with rpc.start_server(tracker.address, "short-lived", lifetime_s=2.0) as server:
        assert server.proc.wait(30) == 0
    summary = rpc.tracker_summary(tracker.address)
    deadline = time.monotonic() + 10
    while rpc.registered_boards(summary, "short-lived") and time.monotonic() < deadline:
        time.sleep(0.2)
        summary = rpc.tracker_summary(tracker.address)
    assert not rpc.registered_boards(summary, "short-lived")


def test_server_cli_rejects_a_bad_tracker_address() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "deploy.rpc_server", "--tracker", "nohost", "--key", "k"],
        capture_output=True,
        text=True,
        timeout=60,
        env=rpc.child_env(),
    )
    assert done.returncode == 2 and "expected HOST:PORT" in done.stderr


def test_tracker_process_exits_when_its_parent_closes_stdin() -> None:
    tracker = rpc.start_tracker(lifetime_s=120)
    try:
        assert tracker.proc.stdin is not None
        tracker.proc.stdin.close()
        assert tracker.proc.wait(15) == 0
    finally:
        tracker.stop()


# --- the board's architecture is checked before anything is uploaded ---------------------------

HOST_TARGET = load_target("host").raw  # target records as the exporter writes them into a manifest
PI_TARGET = load_target("rpi4").raw

# deploy.rpc_server on this host, but telling the world it is an arm64 board (as a Pi would)
_FOREIGN = ("import platform, runpy, sys; platform.machine = lambda: 'aarch64'; "
            "sys.argv = ['deploy.rpc_server', *sys.argv[3:]]; runpy.run_module('deploy.rpc_server', run_name='__main__')")


def start_foreign_board(tracker_address: tuple[str, int], key: str, lifetime_s: float = LIFETIME_S) -> rpc.ServerProcess:
    """A board server on 127.0.0.1 that reports machine 'aarch64' (a board registered as rpi4)."""
    return rpc.start_server(tracker_address, key, python=(sys.executable, "-c", _FOREIGN), lifetime_s=lifetime_s)


@pytest.fixture(scope="module")
def foreign_board(tracker: rpc.TrackerProcess) -> Iterator[rpc.ServerProcess]:
    with start_foreign_board(tracker.address, "rpi4") as server:
        yield server


def test_board_reports_its_architecture_and_cpu_flags(tracker, boards) -> None:
    with rpc.request_board(tracker.address, KEY, wait_s=30) as board:
        machine, flags = board.architecture()
        rpc.check_board_target(board, HOST_TARGET)  # this host's bundle on this host's board: fine
    assert machine == platform.machine() and flags  # x86: /proc/cpuinfo "flags"


def test_a_board_of_another_architecture_is_refused_before_upload(tracker, foreign_board, monkeypatch) -> None:
    from types import SimpleNamespace

    from deploy.measure import MeasureConfig
    from edgedistill.bench.remote import bench_remote

    uploads: list[object] = []
    monkeypatch.setattr(rpc.Board, "load", lambda self, path, device="cpu": uploads.append(path))
    bundle = SimpleNamespace(manifest={"target": HOST_TARGET}, input_shape=(1, 3, 8, 8), input_dtype="float32",
                             artifact_path=lambda *a: Path("never.so"))
    address = f"{tracker.address[0]}:{tracker.address[1]}"
    with pytest.raises(rpc.RPCError) as err:
        bench_remote(bundle, address, "rpi4", ["student"], MeasureConfig.quick(), wait_s=30)
    text = str(err.value)
    assert "is aarch64" in text and "'host' (x86_64)" in text and "nothing was uploaded" in text and "--force" in text
    assert uploads == []
    with rpc.request_board(tracker.address, "rpi4", wait_s=30) as board:  # the board was freed, and a Pi bundle would go
        rpc.check_board_target(board, PI_TARGET)


class _FakeSession:
    """A board session that answers only the functions it is given (a stock TVM server has no board_info)."""

    def __init__(self, functions: dict[str, object]) -> None:
        self.functions = functions
        self.uploaded: list[str] = []

    def get_function(self, name: str):
        if name not in self.functions:
            raise AttributeError(f"function {name} not found on the remote")
        return lambda: self.functions[name]

    def upload(self, path: str) -> None:
        self.uploaded.append(path)


def _fake_board(functions: dict[str, object]) -> rpc.Board:
    return rpc.Board(session=_FakeSession(functions), key="rpi4", address=("127.0.0.1", 9091))


def test_a_stock_server_is_asked_for_its_llvm_triple() -> None:
    board = _fake_board({"target.llvm_get_system_triple": "aarch64-unknown-linux-gnu"})
    assert board.architecture() == ("aarch64", None)
    rpc.check_board_target(board, PI_TARGET)
    with pytest.raises(rpc.RPCError, match=r"is aarch64, but the bundle was compiled for target 'host' \(x86_64\)"):
        rpc.check_board_target(board, HOST_TARGET)


def test_a_board_that_does_not_say_what_it_is_is_refused() -> None:
    board = _fake_board({})
    with pytest.raises(rpc.RPCError, match="does not report its CPU architecture") as err:
        rpc.check_board_target(board, PI_TARGET)
    assert "deploy.rpc_server" in str(err.value) and "--force" in str(err.value)
    assert board.session.uploaded == []


def test_a_board_without_the_targets_cpu_features_is_refused() -> None:
    import json

    info = json.dumps({"machine": "x86_64", "cpu_flags": ["sse2", "avx", "avx2"], "emulated": False})
    board = _fake_board({BOARD_INFO_FUNC: info})
    avx512 = {"name": "x86-avx512", "arch": "x86_64", "cpu": {"flags": ["avx512f"]}}
    with pytest.raises(rpc.RPCError, match="lacks the CPU features avx512f"):
        rpc.check_board_target(board, avx512)
    rpc.check_board_target(board, {**avx512, "cpu": {"flags": ["avx2"]}})
