"""Bounded child processes: a TVM RPC tracker and a board's ``deploy.rpc_server`` (tests, emulated
boards), each in its own process group, stopped with everything they started."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import deploy
import edgedistill
from deploy import rpc_protocol as wire
from edgedistill.bench.rpc.tracker_client import RPCError, tracker_address, tracker_summary, wait_for_board
# Where `python -m deploy.rpc_server` / `-m edgedistill...` resolve from (source tree or site-packages).
IMPORT_ROOTS = tuple(dict.fromkeys(str(Path(p.__file__).resolve().parents[1]) for p in (deploy, edgedistill)))


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
    addr = tracker_address(tracker)
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
