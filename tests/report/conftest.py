"""Made-up decisions for the report tests: no clock, no processes, no store."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from amorsize.core.planner import plan
from amorsize.core.types import Machine, MachineCosts, PlanOptions, Profile
from amorsize.results import Diagnostics, OptimizationResult

COSTS = MachineCosts(
    process_startup=0.05,
    process_task_overhead=100e-6,
    pipe_bandwidth=500e6,
    thread_startup=100e-6,
    thread_task_overhead=20e-6,
    source="measured",
)
MACHINE = Machine(4, 4, 4, 8 * 2**30, None, "fork", False, COSTS)


def make_profile(
    d: float, *, cpu_ratio: float = 1.0, thread_speedup: float | None = 1.0, n: int = 8
) -> Profile:
    """``n`` sampled items of ``d`` seconds."""
    return Profile(
        durations=tuple(d * (1 + 0.05 * (i % 3)) for i in range(n)),
        cpu_times=tuple(d * cpu_ratio for _ in range(n)),
        input_bytes=(100,) * n,
        output_bytes=(200,) * n,
        serialize_seconds=(1e-5,) * n,
        peak_memory_bytes=2**20,
        total_items=2_008,
        thread_speedup=thread_speedup,
    )


def make_decision(
    profile: Profile, *, n_items: int = 2_000, reason: str = "because", warnings: tuple[str, ...] = ()
) -> tuple[OptimizationResult, Diagnostics]:
    """Plan ``profile`` on :data:`MACHINE` and wrap it as ``optimize`` would (measurements kept privately)."""
    the_plan = plan(profile, MACHINE, PlanOptions(n_items=n_items))
    diagnostics = Diagnostics(profile, MACHINE, the_plan, sampling_seconds=0.05, planning_seconds=0.001)
    result = OptimizationResult(
        n_jobs=the_plan.candidate.n_jobs,
        chunksize=the_plan.candidate.chunksize,
        executor=the_plan.candidate.executor,
        reason=reason,
        estimated_speedup=the_plan.estimated_speedup,
        warnings=warnings,
        data=range(n_items + 8),
        predicted_serial_time=the_plan.serial.total,
        predicted_parallel_time=the_plan.prediction.total,
        n_sampled=8,
        plan=the_plan,
        _diagnostics=diagnostics,
    )
    return result, diagnostics


@pytest.fixture
def cpu_decision() -> tuple[OptimizationResult, Diagnostics]:
    """10 ms pure-Python items: processes × 4."""
    return make_decision(make_profile(0.01))


@pytest.fixture
def io_decision() -> tuple[OptimizationResult, Diagnostics]:
    """Waiting items: many threads."""
    return make_decision(make_profile(0.02, cpu_ratio=0.01, thread_speedup=1.98))


@pytest.fixture
def serial_decision() -> tuple[OptimizationResult, Diagnostics]:
    """Microsecond items: serial."""
    return make_decision(make_profile(1e-6))


@pytest.fixture
def decide() -> Callable[..., tuple[OptimizationResult, Diagnostics]]:
    """The factory, for tests that need their own profile."""
    return make_decision
