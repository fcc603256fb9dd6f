"""The wire protocol of TVM's RPC tracker, shared by the board's server (:mod:`deploy.rpc_server`)
and the host's client (:mod:`edgedistill.bench.rpc`): magic numbers, length-prefixed JSON
messages, the tracker handshake. Device side: plain Python, no TVM needed.
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

# Wire constants of TVM's RPC and tracker protocols (tvm/rpc/base.py).
RPC_MAGIC = 0xFF271
RPC_TRACKER_MAGIC = 0x2F271
RPC_CODE_SUCCESS = RPC_MAGIC
RPC_CODE_MISMATCH = RPC_MAGIC + 2
TRACKER_SUCCESS = 0
TRACKER_PUT = 3
TRACKER_REQUEST = 4
TRACKER_UPDATE_INFO = 5
TRACKER_SUMMARY = 6
TRACKER_GET_PENDING_MATCHKEYS = 7

# Extra function every session offers: the board's environment record as JSON.
BOARD_INFO_FUNC = "edgedistill.board_info"


def parse_address(text: str) -> tuple[str, int]:
    """``"HOST:PORT"`` -> ``(host, port)``; raises ``ValueError`` with the reason."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad address '{text}': expected HOST:PORT, e.g. 127.0.0.1:9190")
    return host.strip("[]"), int(port)


def bind_listener(host: str, port: int, port_end: int) -> socket.socket:
    """Listen on the first free port in ``[port, port_end)``; port 0 lets the OS choose."""
    family = socket.getaddrinfo(host, port, 0, 0, socket.IPPROTO_TCP)[0][0]
    last: OSError | None = None
    for candidate in [0] if port == 0 else range(port, max(port_end, port + 1)):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, candidate))
        except OSError as err:
            sock.close()
            last = err
            continue
        sock.listen(4)
        return sock
    raise OSError(f"cannot bind {host} on any port in [{port}, {port_end}): {last}")


def send_json(sock: socket.socket, value: Any) -> None:
    data = json.dumps(value).encode("utf-8")
    sock.sendall(struct.pack("<i", len(data)) + data)


def recv_exact(sock: socket.socket, nbytes: int) -> bytes:
    chunks = []
    while nbytes:
        chunk = sock.recv(min(nbytes, 65536))
        if not chunk:
            raise ConnectionError("connection closed by peer")
        chunks.append(chunk)
        nbytes -= len(chunk)
    return b"".join(chunks)


def recv_json(sock: socket.socket) -> Any:
    size = struct.unpack("<i", recv_exact(sock, 4))[0]
    return json.loads(recv_exact(sock, size).decode("utf-8"))


def open_tracker(addr: tuple[str, int], timeout: float) -> socket.socket:
    """Connect to a tracker and shake hands; socket operations then time out after ``timeout``.

    Raises ``OSError`` when nothing answers and ``ValueError`` when something
    that is not a TVM tracker does.
    """
    sock = socket.create_connection(addr, timeout=timeout)
    try:
        sock.sendall(struct.pack("<i", RPC_TRACKER_MAGIC))
        if struct.unpack("<i", recv_exact(sock, 4))[0] != RPC_TRACKER_MAGIC:
            raise ValueError(f"{addr[0]}:{addr[1]} is not a TVM RPC tracker")
    except BaseException:
        sock.close()
        raise
    return sock
