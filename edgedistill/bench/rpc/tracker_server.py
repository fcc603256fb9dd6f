"""``python -m edgedistill.bench.rpc tracker``: TVM's tracker in a process that stops by itself."""

from __future__ import annotations

import argparse
import os
import select
import sys
import threading
import time
from collections.abc import Sequence

from deploy import rpc_protocol as wire
from edgedistill.errors import ToolchainError
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
