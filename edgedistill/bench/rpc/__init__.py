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

The board side is ``python3 -m deploy.rpc_server --tracker HOST:PORT --key KEY``; both sides speak
the tracker's wire protocol through :mod:`deploy.rpc_protocol`. Modules: :mod:`.tracker_client`
(summary, waiting, requests), :mod:`.session` (a board: upload, run, time, architecture check),
:mod:`.processes` (bounded child processes), :mod:`.tracker_server` (``python -m
edgedistill.bench.rpc tracker``).
"""

from edgedistill.bench.rpc.processes import (  # noqa: F401 - the package's API
    ChildProcess,
    ServerProcess,
    TrackerProcess,
    child_env,
    start_server,
    start_tracker,
)
from edgedistill.bench.rpc.session import Board, RemoteModel, RemoteTiming, check_board_target  # noqa: F401
from edgedistill.bench.rpc.tracker_client import (  # noqa: F401
    CONNECT_TIMEOUT_S,
    DEFAULT_SESSION_TIMEOUT_S,
    DEFAULT_WAIT_S,
    RPCError,
    parse_tracker,
    registered_boards,
    request_board,
    require_registered,
    tracker_summary,
    wait_for_board,
)
