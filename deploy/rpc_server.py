"""TVM RPC server for a board, registered with a tracker, running in this process.

Usage on the board, from the bundle directory::

    python3 -m deploy.rpc_server --tracker HOST:9190 --key rpi4

The stock ``python -m tvm.exec.rpc_server`` starts its listener in a freshly
executed interpreter (``PopenWorker``), which fails under ``qemu-aarch64-static``
without binfmt; this server listens in the process that runs it. Each client
session is served in a forked child (as TVM does), so a crashing or runaway
model cannot take the server down, and the server registers again afterwards.
``--timeout`` (lifetime) and ``--max-sessions`` make it stop by itself.

Device side: needs only Python and the TVM runtime (``apache-tvm``); it never
imports torch or edgedistill. Anyone who reaches the port can run code on the
board: bind to a trusted network only.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import random
import select
import shutil
import signal
import socket
import struct
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from deploy.rpc_protocol import (
    BOARD_INFO_FUNC,
    RPC_CODE_MISMATCH,
    RPC_CODE_SUCCESS,
    RPC_MAGIC,
    TRACKER_GET_PENDING_MATCHKEYS,
    TRACKER_PUT,
    TRACKER_SUCCESS,
    TRACKER_UPDATE_INFO,
    bind_listener,
    open_tracker,
    parse_address,
    recv_exact,
    recv_json,
    send_json,
)

log = logging.getLogger("deploy.rpc_server")

PING_PERIOD_S = 2.0
# A match key handed to a client that never connects is replaced after this long.
UNUSED_MATCHKEY_S = 6.0
TRACKER_CONNECT_TIMEOUT_S = 5.0
TRACKER_RETRY_S = 1.0


@dataclass(frozen=True)
class ServerConfig:
    """What the server binds to, where it registers and when it stops."""

    key: str
    tracker: tuple[str, int] | None = None
    host: str = "0.0.0.0"
    port: int = 9090
    port_end: int = 9199
    custom_addr: str | None = None
    timeout: float | None = None
    max_sessions: int | None = None


class TrackerLink:
    """The server's registration with a tracker: who we are and that we are free."""

    def __init__(self, addr: tuple[str, int], key: str, port: int, custom_addr: str | None) -> None:
        self.addr, self.key, self.port, self.custom_addr = addr, key, port, custom_addr
        self.sock: socket.socket | None = None
        self.matchkey = ""

    def connect(self, deadline: float | None) -> None:
        """Connect and announce this server, retrying until ``deadline`` (tracker restarts)."""
        while True:
            try:
                sock = open_tracker(self.addr, TRACKER_CONNECT_TIMEOUT_S)
                send_json(
                    sock, [TRACKER_UPDATE_INFO, {"key": "server:" + self.key, "addr": [self.custom_addr, self.port]}]
                )
                if recv_json(sock) != TRACKER_SUCCESS:
                    raise ConnectionError("tracker refused this server's info")
                self.sock = sock
                return
            except OSError as err:
                if deadline is not None and time.monotonic() + TRACKER_RETRY_S > deadline:
                    raise
                log.warning("tracker %s:%d not reachable (%s), retrying", *self.addr, err)
                time.sleep(TRACKER_RETRY_S)

    def offer(self) -> None:
        """Tell the tracker this server is free, under a fresh match key."""
        self.matchkey = f"{self.key}:{random.random()}"
        assert self.sock is not None
        send_json(self.sock, [TRACKER_PUT, self.key, [self.port, self.matchkey], self.custom_addr])
        if recv_json(self.sock) != TRACKER_SUCCESS:
            raise ConnectionError("tracker refused PUT")

    def matchkey_pending(self) -> bool:
        """False once a client has been given our match key by the tracker."""
        assert self.sock is not None
        send_json(self.sock, [TRACKER_GET_PENDING_MATCHKEYS])
        return self.matchkey in recv_json(self.sock)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def _handshake(conn: socket.socket, key: str, matchkey: str) -> dict[str, float] | None:
    """Check the client's greeting; return its options, or None (connection refused)."""
    if struct.unpack("<i", recv_exact(conn, 4))[0] != RPC_MAGIC:
        return None
    keylen = struct.unpack("<i", recv_exact(conn, 4))[0]
    words = recv_exact(conn, keylen).decode("utf-8").split()
    if not words or words[0] != "client:" + matchkey:
        conn.sendall(struct.pack("<i", RPC_CODE_MISMATCH))
        return None
    server_key = ("server:" + key).encode("utf-8")
    conn.sendall(struct.pack("<ii", RPC_CODE_SUCCESS, len(server_key)) + server_key)
    timeouts = [float(w[len("-timeout=") :]) for w in words[1:] if w.startswith("-timeout=")]
    return {"timeout": timeouts[-1]} if timeouts else {}


def board_info() -> dict[str, Any]:
    """The bench schema's environment record of this board, sent to the host with timings.

    Threads are TVM's (``TVM_NUM_THREADS``, else the usable cores); ``emulated``
    is true under the qemu board, whose timings mean nothing. ``machine`` (the CPU
    architecture) and ``cpu_flags`` let the host check a bundle's target before it
    uploads anything; the flags are left out under emulation, where /proc/cpuinfo
    describes the host's CPU, not the board's.
    """
    from deploy.env import environment_record, usable_cores
    from deploy.manifest import cpu_flags

    record = environment_record(int(os.environ.get("TVM_NUM_THREADS") or usable_cores()))
    flags = None if record.get("emulated") else cpu_flags()
    if flags is not None:
        record["cpu_flags"] = sorted(flags)
    return record


def _session_main(fd: int, workdir: str) -> None:
    """Child process: serve one RPC session on socket ``fd`` with files in ``workdir``."""
    import tvm

    # The server's SIGTERM handler would only run once ServerLoop returns to Python.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.chdir(workdir)

    @tvm.register_global_func("tvm.rpc.server.workpath", override=True)
    def _workpath(path: str) -> str:
        return os.path.join(workdir, path)

    @tvm.register_global_func("tvm.rpc.server.load_module", override=True)
    def _load_module(name: str) -> Any:
        # .so as uploaded; .tar/.o are linked here with the board's C compiler.
        return tvm.runtime.load_module(os.path.join(workdir, name))

    @tvm.register_global_func(BOARD_INFO_FUNC, override=True)
    def _board_info() -> str:
        return json.dumps(board_info())

    if tvm.get_global_func(RANDOM_FILL_FUNC, allow_missing=True) is None:
        # MetaSchedule's RPC runner fills each candidate's inputs with this; the runtime-only
        # library (TVM_USE_RUNTIME_LIB=1) does not have it.
        tvm.register_global_func(RANDOM_FILL_FUNC, _random_fill)

    tvm.get_global_func("rpc.ServerLoop")(fd)


RANDOM_FILL_FUNC = "tvm.contrib.random.random_fill_for_measure"


def _random_fill(tensor: Any) -> None:
    """Fill a tensor with measurement data: uniform floats, zero integers (always-valid indices)."""
    import numpy as np

    dtype = np.dtype(str(tensor.dtype))
    shape = tuple(int(d) for d in tensor.shape)
    if dtype.kind == "f":
        values = np.random.default_rng().uniform(-1.0, 1.0, shape).astype(dtype)
    else:
        values = np.zeros(shape, dtype)
    tensor.copyfrom(values)


def _serve_session(conn: socket.socket, opts: dict[str, float], deadline: float | None) -> None:
    """Run one session in a forked child; kill it when the session or server time is up."""
    workdir = tempfile.mkdtemp(prefix="edgedistill-rpc-")
    child = multiprocessing.get_context("fork").Process(
        target=_session_main, args=(conn.fileno(), workdir), daemon=True
    )
    try:
        child.start()
        limits = [t for t in (opts.get("timeout"), None if deadline is None else deadline - time.monotonic()) if t]
        child.join(max(0.0, min(limits)) if limits else None)
        if child.is_alive():
            import tvm

            log.info("session time is up, stopping it")
            tvm.get_global_func("rpc.ReturnException")(
                conn.fileno(), "RPCSessionTimeoutError: the session ran past its time limit; raise session_timeout"
            )
        elif child.exitcode != 0:
            log.warning("session process exited with code %s", child.exitcode)
    finally:  # also on SIGTERM / Ctrl+C: no session process or files left behind
        if child.is_alive():
            child.kill()
            child.join()
        conn.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_for_client(
    listener: socket.socket, link: TrackerLink | None, key: str, deadline: float | None
) -> tuple[socket.socket, dict[str, float]] | None:
    """Offer this server and wait for a client that presents our match key; None at deadline."""
    if link is not None:
        link.offer()
    matchkey = link.matchkey if link is not None else key
    unused_since: float | None = None
    while True:
        wait = PING_PERIOD_S if deadline is None else min(PING_PERIOD_S, deadline - time.monotonic())
        if wait <= 0:
            return None
        readable, _, _ = select.select([listener], [], [], wait)
        if not readable:
            if link is None:
                continue
            if link.matchkey_pending():
                unused_since = None
            elif unused_since is None:
                unused_since = time.monotonic()
            elif time.monotonic() - unused_since > UNUSED_MATCHKEY_S:
                log.info("a client took this server but never came; offering it again")
                link.offer()
                matchkey, unused_since = link.matchkey, None
            continue
        conn, addr = listener.accept()
        conn.settimeout(TRACKER_CONNECT_TIMEOUT_S)
        try:
            opts = _handshake(conn, key, matchkey)
        except (OSError, ValueError) as err:
            log.warning("bad handshake from %s: %s", addr[0], err)
            opts = None
        if opts is None:
            conn.close()
            continue
        conn.settimeout(None)
        log.info("session from %s:%d", addr[0], addr[1])
        return conn, opts


def serve(config: ServerConfig) -> int:
    """Serve sessions until the lifetime or session count is reached; return the count served."""
    deadline = None if config.timeout is None else time.monotonic() + config.timeout
    listener = bind_listener(config.host, config.port, config.port_end)
    port = listener.getsockname()[1]
    # One machine-readable line on stdout: whoever started us learns the port.
    print(f"listening {config.host}:{port}", flush=True)
    log.info(
        "listening on %s:%d, key %s, tracker %s",
        config.host,
        port,
        config.key,
        "none" if config.tracker is None else f"{config.tracker[0]}:{config.tracker[1]}",
    )
    link = None if config.tracker is None else TrackerLink(config.tracker, config.key, port, config.custom_addr)
    served = 0
    try:
        while config.max_sessions is None or served < config.max_sessions:
            try:
                if link is not None and link.sock is None:
                    link.connect(deadline)
                client = _wait_for_client(listener, link, config.key, deadline)
            except OSError as err:  # tracker went away: register again
                log.warning("lost the tracker (%s)", err)
                if link is not None:
                    link.close()
                if deadline is not None and time.monotonic() >= deadline:
                    break
                continue
            if client is None:
                break
            _serve_session(*client, deadline)
            served += 1
    finally:
        if link is not None:
            link.close()
        listener.close()
    log.info("stopping after %d session(s)", served)
    return served


def _parse_args(argv: Sequence[str] | None) -> ServerConfig:
    parser = argparse.ArgumentParser(prog="python3 -m deploy.rpc_server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracker", help="tracker address HOST:PORT to register with")
    parser.add_argument("--key", default="", help="device key the tracker files this board under, e.g. rpi4")
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default %(default)s)")
    parser.add_argument("--port", type=int, default=9090, help="first port to try; 0 = any free port")
    parser.add_argument("--port-end", type=int, default=9199, help="end of the port range to try")
    parser.add_argument("--custom-addr", help="address the tracker hands to clients (behind NAT or a tunnel)")
    parser.add_argument("--timeout", type=float, help="stop after this many seconds")
    parser.add_argument("--max-sessions", type=int, help="stop after serving this many sessions")
    args = parser.parse_args(argv)
    if args.tracker and not args.key:
        parser.error("--key is required with --tracker")
    try:
        tracker = parse_address(args.tracker) if args.tracker else None
    except ValueError as err:
        parser.error(str(err))
    return ServerConfig(
        args.key, tracker, args.host, args.port, args.port_end, args.custom_addr, args.timeout, args.max_sessions
    )


def main(argv: Sequence[str] | None = None) -> int:
    config = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s rpc_server %(levelname)s %(message)s")
    # The runtime library alone serves RPC and imports much faster (seconds under qemu).
    os.environ.setdefault("TVM_USE_RUNTIME_LIB", "1")
    # SIGTERM unwinds like Ctrl+C, so the current session's child is stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        import tvm  # noqa: F401  (fail here, with a clear line, if the runtime is missing)
    except ImportError as err:
        print(f"error: the TVM runtime is not importable ({err}); pip install apache-tvm", file=sys.stderr)
        return 2
    try:
        serve(config)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
