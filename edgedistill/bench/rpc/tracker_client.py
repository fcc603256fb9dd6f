"""Talking to a TVM RPC tracker: its summary, its boards, and a request for a free board that
waits at most ``wait_s`` (TVM's own ``TrackerSession.request`` can block forever)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from deploy import rpc_protocol as wire
from edgedistill.errors import EdgeDistillError
from edgedistill.utils.names import suggest

if TYPE_CHECKING:
    from edgedistill.bench.rpc.session import Board

T = TypeVar("T")

CONNECT_TIMEOUT_S = 5.0
DEFAULT_WAIT_S = 60.0
DEFAULT_SESSION_TIMEOUT_S = 600.0
# Where `python -m deploy.rpc_server` / `-m edgedistill...` resolve from (source tree or site-packages).


class RPCError(EdgeDistillError):
    """A tracker or board that cannot be reached, is busy, or fails a remote call."""


def parse_tracker(text: str) -> tuple[str, int]:
    """``"HOST:PORT"`` -> ``(host, port)`` with a clear error."""
    try:
        return wire.parse_address(text)
    except ValueError as err:
        raise RPCError(str(err), "pass the tracker as HOST:PORT, e.g. --rpc-tracker 127.0.0.1:9190") from None


def tracker_address(tracker: str | tuple[str, int]) -> tuple[str, int]:
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
    addr = tracker_address(tracker)
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


def require_registered(tracker: str | tuple[str, int], key: str) -> int:
    """How many boards are registered under ``key`` (busy or free); an error in seconds when the
    tracker does not answer or has none, so a long job (exports, tuning) fails before it starts."""
    addr = tracker_address(tracker)
    summary = tracker_summary(addr)
    count = len(registered_boards(summary, key))
    if not count:
        raise _unknown_key_error(addr, key, f"no board is registered under key '{key}' at tracker {addr[0]}:{addr[1]}", summary)
    return count


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
    return _unknown_key_error(addr, key, what, summary)


def _unknown_key_error(addr: tuple[str, int], key: str, what: str, summary: dict[str, Any]) -> RPCError:
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

    from edgedistill.bench.rpc.session import Board

    if wait_s <= 0:
        raise RPCError(f"the wait for a board must be positive, got {wait_s:g} s")
    addr = tracker_address(tracker)
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
