"""THE latency method, shared by the host bench and the device runner.

One measurement of a zero-argument callable goes:

1. **first run**, timed on its own and reported apart (lazy initialisation,
   first allocations, cold caches);
2. **warm-up** until both ``warmup_runs`` calls and ``warmup_seconds`` have
   passed; its mean gives the time per call used to size the repeats;
3. **repeats**: ``repeats`` blocks of equal size, sized so that together they
   reach both ``min_runs`` calls and ``min_seconds``; if the warm-up estimate
   was too optimistic, further blocks are added until both are reached.

Every call is timed on its own with ``time.perf_counter_ns``. The statistics
are over all timed calls; a coefficient of variation above ``cv_threshold``
sets ``high_cv`` so that reports can warn that the machine was noisy.

:func:`interleaved` measures several callables (student and teacher) with the
repeat blocks alternating between them, so that both see the same machine
state (thermal throttling, background load, frequency changes).
"""

from __future__ import annotations

import math
import time
from array import array
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, Mapping, Sequence

import numpy as np

Timed = Callable[[], object]


@dataclass(frozen=True)
class MeasureConfig:
    """Knobs of the method; the defaults are the project's minimums."""

    warmup_runs: int = 10
    warmup_seconds: float = 0.2
    min_runs: int = 100
    min_seconds: float = 2.0
    repeats: int = 5
    cv_threshold: float = 0.1
    #: extra repeats allowed (as a multiple of ``repeats``) when the warm-up
    #: underestimated the time per call; bounds the total time.
    max_extra_repeat_factor: int = 3

    def __post_init__(self) -> None:
        if self.warmup_runs < 0 or self.warmup_seconds < 0:
            raise ValueError("warm-up runs and seconds must be >= 0")
        if self.min_runs < 1 or self.repeats < 1:
            raise ValueError("min_runs and repeats must be >= 1")
        if self.min_seconds < 0 or self.cv_threshold <= 0:
            raise ValueError("min_seconds must be >= 0 and cv_threshold > 0")

    @classmethod
    def quick(cls) -> "MeasureConfig":
        """A first look (20 runs, 0.3 s, 3 repeats per model): below the project's minimums, not for reports."""
        return cls(min_runs=20, min_seconds=0.3, repeats=3)

    def to_dict(self) -> Dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class LatencyStats:
    """Statistics of one measured callable, in milliseconds."""

    first_run_ms: float
    median_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    runs: int
    repeats: int
    cv: float
    high_cv: bool
    samples_ns: np.ndarray = field(repr=False, compare=False)

    def to_dict(self) -> Dict[str, object]:
        """The ``latency_ms`` object of the edgedistill-bench/1 schema."""
        return {
            "first_run": self.first_run_ms,
            "median": self.median_ms,
            "p90": self.p90_ms,
            "p99": self.p99_ms,
            "mean": self.mean_ms,
            "std": self.std_ms,
            "min": self.min_ms,
            "runs": self.runs,
            "repeats": self.repeats,
            "cv": self.cv,
            "high_cv": self.high_cv,
        }


def summarize(first_run_ns: int, samples_ns: Sequence[int], repeats: int, cv_threshold: float) -> LatencyStats:
    """Turn raw per-call times into :class:`LatencyStats`."""
    if len(samples_ns) == 0:
        raise ValueError("no timed runs to summarise")
    ms = np.asarray(samples_ns, dtype=np.float64) / 1e6
    mean = float(ms.mean())
    std = float(ms.std(ddof=1)) if ms.size > 1 else 0.0
    cv = std / mean if mean > 0 else 0.0
    return LatencyStats(
        first_run_ms=first_run_ns / 1e6,
        median_ms=float(np.median(ms)),
        p90_ms=float(np.percentile(ms, 90)),
        p99_ms=float(np.percentile(ms, 99)),
        mean_ms=mean,
        std_ms=std,
        min_ms=float(ms.min()),
        runs=int(ms.size),
        repeats=repeats,
        cv=cv,
        high_cv=cv > cv_threshold,
        samples_ns=np.asarray(samples_ns, dtype=np.int64),
    )


def _time_once(fn: Timed) -> int:
    start = time.perf_counter_ns()
    fn()
    return time.perf_counter_ns() - start


def _warm_up(fn: Timed, config: MeasureConfig) -> float:
    """Run until both warm-up minimums are met; return the mean seconds per call.

    Calls are timed one by one, like the repeats, so the estimate excludes the
    loop's own overhead and the repeats are sized right.
    """
    count = timed = 0
    start = time.perf_counter_ns()
    while count < config.warmup_runs or time.perf_counter_ns() - start < config.warmup_seconds * 1e9:
        timed += _time_once(fn)
        count += 1
    return timed / 1e9 / max(count, 1)


def _block_size(seconds_per_call: float, config: MeasureConfig) -> int:
    """Calls per repeat so that ``repeats`` blocks reach both minimums."""
    by_count = math.ceil(config.min_runs / config.repeats)
    by_time = math.ceil(config.min_seconds / config.repeats / max(seconds_per_call, 1e-9))
    return max(1, by_count, by_time)


class _Series:
    """Timed calls of one callable, collected block by block."""

    def __init__(self, fn: Timed, block: int) -> None:
        self.fn = fn
        self.block = block
        self.samples = array("q")
        self.total_ns = 0
        self.repeats = 0

    def run_block(self) -> None:
        fn = self.fn
        append = self.samples.append
        block_ns = 0
        for _ in range(self.block):
            start = time.perf_counter_ns()
            fn()
            elapsed = time.perf_counter_ns() - start
            append(elapsed)
            block_ns += elapsed
        self.total_ns += block_ns
        self.repeats += 1

    def satisfied(self, config: MeasureConfig) -> bool:
        return len(self.samples) >= config.min_runs and self.total_ns >= config.min_seconds * 1e9


def interleaved(fns: Mapping[str, Timed], config: MeasureConfig = MeasureConfig()) -> Dict[str, LatencyStats]:
    """Measure several callables with alternating repeat blocks.

    First runs and warm-ups happen in the order given; the repeat blocks then
    alternate (A B, B A, A B, ...) so that neither callable always follows
    the other. Returns the statistics by name, in the order given.
    """
    if not fns:
        raise ValueError("nothing to measure")
    names = list(fns)
    first_run = {name: _time_once(fns[name]) for name in names}
    series = {name: _Series(fns[name], _block_size(_warm_up(fns[name], config), config)) for name in names}

    for repeat in range(config.repeats):
        order = names if repeat % 2 == 0 else names[::-1]
        for name in order:
            series[name].run_block()

    extra = 0
    pending = [name for name in names if not series[name].satisfied(config)]
    while pending and extra < config.max_extra_repeat_factor * config.repeats:
        order = pending if extra % 2 == 0 else pending[::-1]
        for name in order:
            series[name].run_block()
        extra += 1
        pending = [name for name in pending if not series[name].satisfied(config)]

    return {
        name: summarize(first_run[name], series[name].samples, series[name].repeats, config.cv_threshold)
        for name in names
    }


def measure(fn: Timed, config: MeasureConfig = MeasureConfig()) -> LatencyStats:
    """Measure one callable with the method described in the module docstring."""
    return interleaved({"only": fn}, config)["only"]
