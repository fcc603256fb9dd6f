"""Run and time compiled models on remote boards through a TVM RPC tracker.

Host side of ``edgedistill bench --rpc-tracker HOST:PORT --rpc-key KEY``:

* :func:`request_board` asks the tracker for a free board of a key, waiting at
  most ``wait_s`` (TVM's own ``TrackerSession.request`` can block forever);
  several boards under one key share the load, each request gets a free one.
* :meth:`Board.load` uploads a compiled module (``.so``, or ``.tar`` linked on
  the board) and wraps it in a Relax VM on the board; :meth:`RemoteModel.run`
  returns numpy outputs and :meth:`RemoteModel.time` times it on the board with
  TVM's remote time evaluator, following the project's latency method.
* :func:`start_tracker` / :func:`start_server` run a tracker or a board's
  ``deploy.rpc_server`` as bounded child processes (tests, emulated boards).

The board side is ``python3 -m deploy.rpc_server --tracker HOST:PORT --key KEY``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

import deploy
import edgedistill
from deploy import rpc_server as wire
from deploy.manifest import normalise_arch, required_cpu_flags, target_arch
from edgedistill.errors import EdgeDistillError, ToolchainError
from edgedistill.utils.names import suggest

T = TypeVar("T")

CONNECT_TIMEOUT_S = 5.0
DEFAULT_WAIT_S = 60.0
DEFAULT_SESSION_TIMEOUT_S = 600.0
# Where `python -m deploy.rpc_server` / `-m edgedistill...` resolve from (source tree or site-packages).
IMPORT_ROOTS = tuple(dict.fromkeys(str(Path(p.__file__).resolve().parents[1]) for p in (deploy, edgedistill)))


class RPCError(EdgeDistillError):
    """A tracker or board that cannot be reached, is busy, or fails a remote call."""


def parse_tracker(text: str) -> tuple[str, int]:
    """``"HOST:PORT"`` -> ``(host, port)`` with a clear error."""
    try:
        return wire.parse_address(text)
    except ValueError as err:
        raise RPCError(str(err), "pass the tracker as HOST:PORT, e.g. --rpc-tracker 127.0.0.1:9190") from None


def _address(tracker: str | tuple[str, int]) -> tuple[str, int]:
    return parse_tracker(tracker) if isinstance(tracker, str) else tracker


def _open_tracker(addr: tuple[str, int], timeout: float) -> socket.socket:
    try:
        return wire.open_tracker(addr, timeout)
    except (OSError, ValueError) as err:
        raise RPCError(
            f"cannot reach the RPC tracker at {addr[0]}:{addr[1]} ({err})",
            "start one with `python -m tvm.exec.rpc_tracker --port 9190` or check --rpc-tracker",
        ) from None


def tracker_summary(tracker: str | tuple[str, int], timeout: float = CONNECT_TIMEOUT_S) -> dict[str, Any]:
    """The tracker's view: ``{"queue_info": {key: {"free", "pending"}}, "server_info": [...]}``."""
    addr = _address(tracker)
    sock = _open_tracker(addr, timeout)
    try:
        wire.send_json(sock, [wire.TRACKER_SUMMARY])
        reply = wire.recv_json(sock)
    except OSError as err:
        raise RPCError(f"the RPC tracker at {addr[0]}:{addr[1]} did not answer ({err})") from None
    finally:
        sock.close()
    if reply[0] != wire.TRACKER_SUCCESS:
        raise RPCError(f"the RPC tracker at {addr[0]}:{addr[1]} refused a summary: {reply}")
    return reply[1]


def registered_boards(summary: dict[str, Any], key: str) -> list[tuple[str, int]]:
    """Addresses of the servers registered under ``key`` (busy or free)."""
    return [tuple(s["addr"]) for s in summary["server_info"] if s.get("key") == "server:" + key]


def wait_for_board(
    tracker: str | tuple[str, int], key: str, port: int, timeout: float, alive: Callable[[], bool] = lambda: True
) -> None:
    """Wait until the server listening on ``port`` has registered under ``key``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        if any(p == port for _, p in registered_boards(tracker_summary(tracker), key)):
            return
        time.sleep(0.2)
    raise RPCError(f"the RPC server on port {port} did not register under key '{key}' within {timeout:g} s")


def _no_board_error(addr: tuple[str, int], key: str, wait_s: float) -> RPCError:
    """Explain a request that timed out: busy boards, no boards, or a mistyped key."""
    what = f"no free board under key '{key}' at tracker {addr[0]}:{addr[1]} within {wait_s:g} s"
    try:
        summary = tracker_summary(addr)
    except RPCError:
        return RPCError(what, "the tracker stopped answering")
    count = len(registered_boards(summary, key))
    if count:
        return RPCError(what, f"all {count} board(s) of that key are busy; wait, add boards, or raise the wait time")
    keys = sorted({s["key"].split(":", 1)[1] for s in summary["server_info"] if s.get("key", "").startswith("server:")})
    close = suggest(key, keys) if keys else None
    hint = f"did you mean '{close}'? " if close else ""
    hint += "registered keys: " + (", ".join(keys) if keys else "none")
    hint += f"; start a board with `python3 -m deploy.rpc_server --tracker {addr[0]}:{addr[1]} --key {key}`"
    return RPCError(what, hint)


def _bounded(fn: Callable[[], T], timeout: float, what: str) -> T:
    """Run a call that may block in C++ for ever; give up (and leave it behind) after ``timeout``."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as err:  # handed to the caller below
            box["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise RPCError(f"{what} did not finish within {timeout:g} s")
    if "error" in box:
        raise RPCError(f"{what} failed: {str(box['error']).strip().splitlines()[-1]}") from box["error"]
    return box["value"]


def request_board(
    tracker: str | tuple[str, int],
    key: str,
    *,
    wait_s: float = DEFAULT_WAIT_S,
    session_timeout_s: float = DEFAULT_SESSION_TIMEOUT_S,
    priority: int = 1,
    connect_timeout_s: float = 30.0,
) -> Board:
    """Get a session on a free board of ``key``, waiting at most ``wait_s`` for one.

    The board ends the session after ``session_timeout_s`` (0 = never);
    ``connect_timeout_s`` bounds the connection to the board once assigned.
    """
    import tvm.rpc

    if wait_s <= 0:
        raise RPCError(f"the wait for a board must be positive, got {wait_s:g} s")
    addr = _address(tracker)
    sock = _open_tracker(addr, CONNECT_TIMEOUT_S)
    try:
        sock.settimeout(wait_s)
        wire.send_json(sock, [wire.TRACKER_REQUEST, key, "", priority])
        reply = wire.recv_json(sock)
    except TimeoutError:
        raise _no_board_error(addr, key, wait_s) from None
    except OSError as err:
        raise RPCError(f"the RPC tracker at {addr[0]}:{addr[1]} dropped the request ({err})") from None
    finally:
        sock.close()  # the tracker drops a request whose client has gone
    if reply[0] != wire.TRACKER_SUCCESS:
        raise RPCError(f"the RPC tracker refused the request for key '{key}': {reply}")
    host, port, matchkey = reply[1]
    session = _bounded(
        lambda: tvm.rpc.connect(host, port, matchkey, session_timeout=session_timeout_s),
        connect_timeout_s,
        f"connecting to board {host}:{port} (key '{key}')",
    )
    return Board(session=session, key=key, address=(host, port))


@dataclass(frozen=True)
class RemoteTiming:
    """Latency of one model measured on the board by TVM's time evaluator.

    ``repeat_times_s`` has one entry per timed repeat; each repeat is at least
    ``min_runs_per_repeat`` runs (TVM adds runs, unreported, to a repeat shorter
    than its share of the time budget) and its entry is their mean, in seconds,
    timed on the board (no network in it). ``first_call_s`` is the very first
    call, timed from the host, so it includes one RPC round trip. ``emulated``
    marks boards whose times mean nothing (qemu).
    """

    first_call_s: float
    min_runs_per_repeat: int
    repeat_times_s: list[float]
    emulated: bool = False


@contextlib.contextmanager
def _remote_call(what: str) -> Iterator[None]:
    """Turn TVM's errors from a remote call (session expired, board gone, ...) into one clear line."""
    try:
        yield
    except RPCError:
        raise
    except Exception as err:  # TVM raises its own error types, registered by name
        lines = str(err).strip().splitlines()
        raise RPCError(
            f"{what} failed: {lines[-1] if lines else type(err).__name__}",
            "a session expires after session_timeout_s; request the board again",
        ) from err


@dataclass
class RemoteModel:
    """A compiled Relax module loaded on a board, run through a VM there."""

    vm: Any
    device: Any
    emulated: bool = False
    board: str = "board"
    function: str = "main"

    def _set_inputs(self, inputs: Sequence[np.ndarray]) -> None:
        import tvm

        if self.vm is None:
            raise RPCError("this model's board session is closed", "request the board again and reload the model")
        tensors = [tvm.runtime.tensor(np.ascontiguousarray(x), device=self.device) for x in inputs]
        self.vm.set_input(self.function, *tensors)

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Run once on the board; return the outputs as numpy arrays (flattened if a tuple)."""
        with _remote_call(f"running the model on {self.board}"):
            self._set_inputs(inputs)
            self.vm.invoke_stateful(self.function)
            return self._outputs(())

    def _outputs(self, index: tuple[int, ...]) -> list[np.ndarray]:
        # Not VirtualMachine.get_outputs: its self-referencing closure makes a reference
        # cycle that keeps the remote session (and so the board) busy until gc runs.
        arity = self.vm["get_output_arity"](self.function, *index)
        if arity == -1:
            return [self.vm["get_output"](self.function, *index).numpy()]
        return [a for i in range(arity) for a in self._outputs((*index, i))]

    def time(
        self,
        inputs: Sequence[np.ndarray],
        *,
        warmup_runs: int = 10,
        warmup_s: float = 0.2,
        min_runs: int = 100,
        min_s: float = 2.0,
        repeats: int = 100,
    ) -> RemoteTiming:
        """Time the model on the board following the project's method.

        One first call (reported apart), a warm-up of at least ``warmup_runs``
        runs and ``warmup_s`` seconds, then ``repeats`` timed repeats that
        together hold at least ``min_runs`` runs and ``min_s`` seconds. With the
        default ``repeats=100`` each repeat is one run for short budgets, so the
        caller gets a distribution for median/p90/p99; long budgets group runs.
        """
        if repeats < 1 or min_runs < 1:
            raise RPCError("repeats and min_runs must be at least 1")
        with _remote_call(f"timing the model on {self.board}"):
            return self._time(inputs, warmup_runs, warmup_s, min_runs, min_s, repeats)

    def _time(
        self, inputs: Sequence[np.ndarray], warmup_runs: int, warmup_s: float, min_runs: int, min_s: float, repeats: int
    ) -> RemoteTiming:
        self._set_inputs(inputs)
        start = time.perf_counter()
        self.vm.invoke_stateful(self.function)
        self.device.sync()
        first_call_s = time.perf_counter() - start
        warm = self.vm.time_evaluator(
            "invoke_stateful", self.device, number=warmup_runs, repeat=1, min_repeat_ms=math.ceil(warmup_s * 1000)
        )
        per_run_s = float(warm(self.function).mean)
        runs = max(min_runs, math.ceil(min_s / per_run_s) if per_run_s > 0 else min_runs)
        number = max(1, math.ceil(runs / repeats))
        # The floor on each repeat's length keeps the total >= min_s when the warm-up overestimated.
        timer = self.vm.time_evaluator(
            "invoke_stateful",
            self.device,
            number=number,
            repeat=repeats,
            min_repeat_ms=math.ceil(min_s * 1000 / repeats),
        )
        result = timer(self.function)
        return RemoteTiming(first_call_s, number, [float(t) for t in result.results], self.emulated)


@dataclass
class Board:
    """An RPC session on one board, handed out by the tracker; close it to free the board."""

    session: Any
    key: str
    address: tuple[str, int]
    _models: list[RemoteModel] = field(default_factory=list, repr=False)
    _info: dict[str, Any] | None = field(default=None, repr=False)

    def load(self, module_path: str | os.PathLike[str], device: str = "cpu") -> RemoteModel:
        """Upload a compiled module (``.so``; ``.tar`` is linked on the board) and start a VM on it."""
        import tvm

        path = Path(module_path)
        if not path.is_file():
            raise RPCError(f"compiled module not found: {path}", "export the model for this target first")
        if self.session is None:
            raise RPCError("this board session is closed", "request the board again")
        try:
            self.session.upload(str(path))
            lib = self.session.load_module(path.name)
            dev = self.session.device(device)
            vm = tvm.relax.VirtualMachine(lib, dev)
        except Exception as err:  # TVM raises its own error types for remote failures
            lines = str(err).strip().splitlines()
            raise RPCError(
                f"board {self.address[0]}:{self.address[1]} could not load {path.name}: "
                f"{lines[-1] if lines else type(err).__name__}",
                "check that the module was compiled for this board's target and TVM version",
            ) from err
        board = f"board {self.address[0]}:{self.address[1]} (key '{self.key}')"
        model = RemoteModel(vm=vm, device=dev, emulated=bool(self.info().get("emulated")), board=board)
        self._models.append(model)
        return model

    def info(self) -> dict[str, Any]:
        """The board's self-description (machine, cores, versions, emulated); {} if it has none."""
        if self._info is None:
            try:
                self._info = json.loads(self.session.get_function(wire.BOARD_INFO_FUNC)())
            except Exception:  # a stock TVM server: no such function
                self._info = {}
        return self._info

    def architecture(self) -> tuple[str | None, set[str] | None]:
        """The board's CPU architecture (``x86_64``, ``aarch64``, ...) and CPU flags, as far as it says.

        ``deploy.rpc_server`` reports both; a stock TVM server with the compiler library is asked
        for its LLVM triple; (None, None) when the board cannot tell.
        """
        info = self.info()
        machine = info.get("machine")
        if not machine and self.session is not None:
            try:
                machine = str(self.session.get_function("target.llvm_get_system_triple")()).split("-", 1)[0]
            except Exception:  # a runtime-only server has no such function
                machine = None
        flags = info.get("cpu_flags")
        return (normalise_arch(machine) if machine else None), (set(flags) if isinstance(flags, list) else None)

    def close(self) -> None:
        """Drop every remote handle so the session ends and the board is free again.

        Remote handles keep the session open, so the models loaded through
        this board are emptied too: a closed board cannot stay busy.
        """
        for model in self._models:
            model.vm = model.device = None
        self._models.clear()
        self.session = None
        gc.collect()  # a remote handle caught in a reference cycle would keep the board busy

    def __enter__(self) -> Board:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_board_target(board: Board, target: Mapping[str, Any]) -> None:
    """Refuse, before anything is uploaded, a board whose CPU cannot run code built for ``target``
    (a bundle manifest's ``target``): another architecture, missing CPU features, or a board that
    does not say what it is."""
    name = target.get("name", "?")
    wanted = target_arch(target)
    if wanted is None:  # the target states no CPU architecture: nothing to check against
        return
    machine, flags = board.architecture()
    label = f"board {board.address[0]}:{board.address[1]} (key '{board.key}')"
    force = "--force uploads anyway"
    if machine is None:
        raise RPCError(
            f"{label} does not report its CPU architecture, so it cannot be checked against the bundle's target "
            f"'{name}' ({wanted}); nothing was uploaded",
            f"serve the board with 'python3 -m deploy.rpc_server' from the bundle (it reports its architecture), or {force}",
        )
    if machine != wanted:
        raise RPCError(
            f"{label} is {machine}, but the bundle was compiled for target '{name}' ({wanted}); nothing was uploaded",
            f"export the bundle for a {machine} target ('edgedistill targets' lists them) or pass the key of a "
            f"{wanted} board; {force}",
        )
    missing = [flag for flag in required_cpu_flags(target) if flags and flag not in flags]
    if missing and not board.info().get("emulated"):
        raise RPCError(
            f"{label} ({machine}) lacks the CPU features {', '.join(missing)} that target '{name}' code uses; "
            "nothing was uploaded",
            f"export for a target that matches that board's CPU, or {force}",
        )


# --- child processes: a tracker, a board's server ---------------------------------


class ChildProcess:
    """A bounded helper process in its own process group; stopping it stops its children."""

    def __init__(
        self, command: Sequence[str], what: str, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> None:
        self.what = what
        # Output goes to a file, not a pipe nobody drains; it explains a failed start.
        self.log = tempfile.NamedTemporaryFile(prefix="edgedistill-", suffix=".log", delete=False)  # noqa: SIM115
        self.proc = subprocess.Popen(
            list(command),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )

    def read_line(self, timeout: float) -> str:
        """The child's next stdout line, within ``timeout``; fail with its log otherwise."""
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline().decode("utf-8", "replace").strip() if ready else ""
        if not line:
            tail = self.log_tail()
            self.stop()
            how = f"exited with code {self.proc.returncode}" if ready else f"did not start within {timeout:g} s"
            raise RPCError(f"{self.what} {how}", tail)
        return line

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = Path(self.log.name).read_text(encoding="utf-8", errors="replace").strip().splitlines()
        except OSError:  # already stopped: the log is gone
            text = []
        return "log: " + " | ".join(text[-lines:]) if text else "no output"

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM the process group, SIGKILL it after ``grace_s``; remove the log."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)

    def __enter__(self) -> ChildProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class TrackerProcess(ChildProcess):
    """A TVM RPC tracker in a child process; ``address`` is where it listens."""

    address: tuple[str, int]


class ServerProcess(ChildProcess):
    """A board's ``deploy.rpc_server`` in a child process, registered with a tracker."""

    address: tuple[str, int]
    key: str


def start_tracker(
    host: str = "127.0.0.1", port: int = 0, lifetime_s: float = 600.0, start_timeout_s: float = 60.0
) -> TrackerProcess:
    """Start a TVM RPC tracker (port 0: any free port) that stops itself after ``lifetime_s``."""
    command = [
        sys.executable,
        "-m",
        "edgedistill.bench.rpc",
        "tracker",
        "--host",
        host,
        "--port",
        str(port),
        "--lifetime",
        str(lifetime_s),
        "--exit-with-parent",
    ]
    proc = TrackerProcess(command, "the RPC tracker", env=child_env())
    _, _, found = proc.read_line(start_timeout_s).rpartition(" ")
    proc.address = wire.parse_address(found)
    return proc


def start_server(
    tracker: str | tuple[str, int],
    key: str,
    *,
    python: Sequence[str] = (sys.executable,),
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    host: str = "127.0.0.1",
    lifetime_s: float = 600.0,
    start_timeout_s: float = 60.0,
) -> ServerProcess:
    """Start ``deploy.rpc_server`` with ``python`` (a command prefix, e.g. qemu + interpreter).

    By default this host's Python runs the ``deploy`` package it imports;
    ``env`` and ``cwd`` point another interpreter at its own copy.

    Returns once the server has registered with the tracker, so a request
    right after finds it. The server stops itself after ``lifetime_s``.
    """
    addr = _address(tracker)
    tracker_summary(addr)  # fail now, not after the server's start-up, if nothing is there
    command = [
        *python,
        "-m",
        "deploy.rpc_server",
        "--tracker",
        f"{addr[0]}:{addr[1]}",
        "--key",
        key,
        "--host",
        host,
        "--port",
        "0",
        "--timeout",
        str(lifetime_s),
    ]
    proc = ServerProcess(command, f"the RPC server for key '{key}'", env=env or child_env(), cwd=cwd)
    try:
        _, _, found = proc.read_line(start_timeout_s).rpartition(" ")
        proc.address, proc.key = wire.parse_address(found), key
        wait_for_board(addr, key, proc.address[1], start_timeout_s, proc.alive)
    except RPCError as err:
        hint = err.hint if proc.alive() else proc.log_tail()
        proc.stop()
        raise RPCError(err.message, hint) from None
    return proc


def child_env() -> dict[str, str]:
    """This environment, with our packages importable and the faster TVM runtime library."""
    env = dict(os.environ, TVM_USE_RUNTIME_LIB="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [*IMPORT_ROOTS, env.get("PYTHONPATH")]))
    return env


def _serve_tracker(host: str, port: int, lifetime_s: float, exit_with_parent: bool) -> None:
    """Child-process entry: run TVM's tracker until the lifetime ends (or the parent goes away)."""
    import asyncio

    try:
        from tvm.rpc.tracker import TrackerServerHandler
    except ImportError as err:  # tornado
        raise ToolchainError(f"the TVM RPC tracker cannot start: {err}", "pip install tornado") from None
    listener = wire.bind_listener(host, port, port + 1)

    def run() -> None:
        asyncio.set_event_loop(asyncio.new_event_loop())
        TrackerServerHandler(listener, stop_key=os.urandom(16).hex()).run()

    threading.Thread(target=run, daemon=True).start()
    print(f"listening {host}:{listener.getsockname()[1]}", flush=True)
    deadline = time.monotonic() + lifetime_s
    while (left := deadline - time.monotonic()) > 0:
        if not exit_with_parent:
            time.sleep(left)
        elif select.select([sys.stdin], [], [], left)[0] and not sys.stdin.buffer.read1(1):
            return  # the parent closed our stdin: it is gone


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgedistill.bench.rpc")
    sub = parser.add_subparsers(dest="command", required=True)
    tracker = sub.add_parser("tracker", help="run a TVM RPC tracker that stops by itself")
    tracker.add_argument("--host", default="127.0.0.1")
    tracker.add_argument("--port", type=int, default=9190, help="0 = any free port")
    tracker.add_argument("--lifetime", type=float, default=3600.0, help="stop after this many seconds")
    tracker.add_argument("--exit-with-parent", action="store_true", help="also stop when stdin closes")
    args = parser.parse_args(argv)
    _serve_tracker(args.host, args.port, args.lifetime, args.exit_with_parent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
