"""The run-queue clock: real contention (busy processes pinned to this thread's CPU), real schedstat."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
from measure_funcs import busy_processes, cpu_spin

from amorsize.measure.runqueue import RunQueueClock
from amorsize.measure.sampler import sample
from amorsize.workloads import spin


def _schedstat_readable() -> bool:
    with RunQueueClock() as clock:
        return clock.corrects


pytestmark = pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or not _schedstat_readable(),
    reason="needs Linux's per-thread schedstat and CPU affinity",
)


@pytest.fixture
def crowded_cpu() -> Iterator[None]:
    """Pin this thread to one CPU and run two busy processes there: it gets about a third of it."""
    before = os.sched_getaffinity(0)
    cpu = min(before)
    with busy_processes(2, cpu=cpu):
        os.sched_setaffinity(0, {cpu})
        try:
            yield
        finally:
            os.sched_setaffinity(0, before)


@pytest.mark.timeout(30)
def test_time_spent_waiting_for_the_cpu_is_left_out(crowded_cpu: None) -> None:
    with RunQueueClock() as clock:
        wall, corrected, cpu = time.perf_counter(), clock(), time.thread_time()
        cpu_spin(0.15)
        wall, corrected = time.perf_counter() - wall, clock() - corrected
        cpu = time.thread_time() - cpu
    assert wall > 1.8 * cpu  # the CPU really was shared (about a third of it was ours)
    assert cpu * 0.9 < corrected < cpu * 1.3


@pytest.mark.timeout(30)
def test_computing_items_on_a_crowded_cpu_do_not_look_waiting(crowded_cpu: None) -> None:
    # ~4 ms of pure Python each, timed with a third of a CPU: ~12 ms of wall time, 4 ms of CPU
    profile = sample(spin, [80_000] * 400, probe_threads=False).profile
    assert not profile.is_io_bound, (profile.durations, profile.cpu_times)
    assert profile.cpu_ratio > 0.6  # 0.32–0.40 read by the wall clock alone; 0.77–1.0 corrected


def test_the_clock_without_schedstat_is_the_wall_clock() -> None:
    ticks = iter([1.0, 2.5])
    clock = RunQueueClock(lambda: next(ticks))  # not entered: nothing is read
    assert not clock.corrects
    assert [clock(), clock()] == [1.0, 2.5]


def test_the_file_is_closed_after_use() -> None:
    clock = RunQueueClock()
    with clock:
        assert clock.corrects
    assert not clock.corrects
    before = time.perf_counter()
    assert clock() >= before  # the wall clock again
