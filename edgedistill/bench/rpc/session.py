"""A session on one board: upload a compiled module, run it, time it with TVM's remote time
evaluator, and check the board's architecture against a bundle's target before anything is uploaded."""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deploy import rpc_protocol as wire
from deploy.manifest import normalise_arch, required_cpu_flags, target_arch
from edgedistill.bench.rpc.tracker_client import RPCError
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
