"""The latency method (deploy.measure) on callables of known duration.

Busy-waits guarantee a lower bound per call; the machine may only add time,
so the assertions are about bounds, ordering, counts and consistency.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from deploy.measure import MeasureConfig, interleaved, measure, summarize

FAST = MeasureConfig(warmup_runs=5, warmup_seconds=0.02, min_runs=40, min_seconds=0.1, repeats=4)


def busy(ms: float):
    def call() -> None:
        end = time.perf_counter_ns() + int(ms * 1e6)
        while time.perf_counter_ns() < end:
            pass

    return call


def test_stats_are_consistent_and_bounded_below_by_the_true_duration():
    stats = measure(busy(0.5), FAST)
    assert stats.min_ms >= 0.5
    assert stats.first_run_ms >= 0.5
    assert stats.min_ms <= stats.median_ms <= stats.p90_ms <= stats.p99_ms <= stats.samples_ns.max() / 1e6
    assert stats.min_ms <= stats.mean_ms
    assert stats.runs == len(stats.samples_ns) >= FAST.min_runs
    assert stats.samples_ns.sum() / 1e9 >= FAST.min_seconds
    assert stats.repeats >= FAST.repeats
    assert stats.runs % stats.repeats == 0  # equal-sized repeat blocks
    assert stats.cv == pytest.approx(stats.std_ms / stats.mean_ms)
    assert stats.high_cv == (stats.cv > FAST.cv_threshold)


def test_minimum_time_drives_the_run_count_for_slow_calls():
    config = MeasureConfig(warmup_runs=2, warmup_seconds=0.0, min_runs=5, min_seconds=0.3, repeats=3)
    stats = measure(busy(5.0), config)
    assert stats.samples_ns.sum() / 1e9 >= 0.3
    assert stats.runs > config.min_runs  # the time minimum, not the count of 5, decided


def test_first_run_is_reported_apart_from_the_repeats():
    calls = []

    def slow_first() -> None:
        calls.append(None)
        busy(20.0 if len(calls) == 1 else 0.2)()

    stats = measure(slow_first, FAST)
    assert stats.first_run_ms >= 20.0
    assert stats.median_ms < stats.first_run_ms
    warmup_calls = len(calls) - 1 - stats.runs
    assert warmup_calls >= FAST.warmup_runs


def test_interleaved_alternates_blocks_and_keeps_the_order_of_durations():
    trace = []

    def tagged(tag: str, ms: float):
        work = busy(ms)

        def call() -> None:
            trace.append(tag)
            work()

        return call

    results = interleaved({"student": tagged("s", 0.3), "teacher": tagged("t", 1.5)}, FAST)
    assert list(results) == ["student", "teacher"]
    student, teacher = results["student"], results["teacher"]
    assert student.min_ms >= 0.3 and teacher.min_ms >= 1.5
    assert teacher.median_ms > student.median_ms
    # first runs, then both warm-ups, then at least one switch per repeat block
    assert trace[:2] == ["s", "t"]
    switches = sum(1 for a, b in zip(trace, trace[1:]) if a != b)
    assert switches >= FAST.repeats
    assert trace.count("s") >= 1 + FAST.warmup_runs + student.runs
    assert trace.count("t") >= 1 + FAST.warmup_runs + teacher.runs
    for stats in results.values():
        assert stats.runs >= FAST.min_runs and stats.samples_ns.sum() / 1e9 >= FAST.min_seconds


def test_to_dict_has_the_schema_keys():
    stats = measure(busy(0.1), FAST)
    assert set(stats.to_dict()) == {"first_run", "median", "p90", "p99", "mean", "std", "min", "runs", "repeats", "cv", "high_cv"}
    assert stats.to_dict()["median"] == stats.median_ms


def test_summarize_flags_a_noisy_series():
    steady = summarize(1_000_000, [1_000_000] * 50, 5, 0.1)
    noisy = summarize(1_000_000, [1_000_000, 3_000_000] * 25, 5, 0.1)
    assert steady.cv == 0 and not steady.high_cv
    assert noisy.high_cv and noisy.median_ms == pytest.approx(np.median([1.0, 3.0] * 25))


@pytest.mark.parametrize("bad", [dict(min_runs=0), dict(repeats=0), dict(cv_threshold=0), dict(warmup_seconds=-1)])
def test_config_rejects_nonsense(bad):
    with pytest.raises(ValueError):
        MeasureConfig(**bad)
