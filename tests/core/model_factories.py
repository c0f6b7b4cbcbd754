"""Synthetic profiles and machines for the pure model's tests (``test_model``, ``test_planner``)."""

from __future__ import annotations

from amorsize.core.types import Machine, MachineCosts, Profile

ZERO_COSTS = MachineCosts(0.0, 0.0, 0.0, 0.0, 0.0)
COSTS = MachineCosts(
    process_startup=0.05,
    process_task_overhead=100e-6,
    pipe_bandwidth=500e6,
    thread_startup=100e-6,
    thread_task_overhead=20e-6,
)


def make_profile(
    d: float = 0.01,
    *,
    n: int = 8,
    cpu_ratio: float = 1.0,
    thread_speedup: float | None = 1.0,
    durations: tuple[float, ...] | None = None,
    in_bytes: int = 100,
    out_bytes: int = 100,
    serialize: float = 1e-5,
    peak: int = 0,
    blas: int = 0,
    pickle_method: str | None = "pickle",
    free_threaded: bool = False,
) -> Profile:
    """A synthetic profile: ``n`` items of ``d`` seconds (or the given durations)."""
    durs = durations if durations is not None else (d,) * n
    k = len(durs)
    return Profile(
        durations=durs,
        cpu_times=tuple(x * cpu_ratio for x in durs),
        input_bytes=(in_bytes,) * k,
        output_bytes=(out_bytes,) * k,
        serialize_seconds=(serialize,) * k,
        peak_memory_bytes=peak,
        thread_speedup=thread_speedup,
        pickle_method=pickle_method,
        blas_threads=blas,
        free_threaded=free_threaded,
    )


def make_machine(
    usable: int = 4,
    *,
    physical: int | None = None,
    logical: int | None = None,
    memory: int = 16 * 2**30,
    costs: MachineCosts = COSTS,
    free_threaded: bool = False,
) -> Machine:
    return Machine(
        logical_cores=logical if logical is not None else usable,
        usable_cores=usable,
        physical_cores=physical if physical is not None else usable,
        available_memory=memory,
        memory_limit=None,
        start_method="fork",
        free_threaded=free_threaded,
        costs=costs,
    )
