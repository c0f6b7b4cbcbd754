"""What a warm ``optimize()`` costs beyond its dry run, and what the dry run costs.

Run by hand::

    python benchmarks/bench_optimize.py

"Warm" means the machine calibration is already in the store and the modules are imported (the
first call of a process pays for both). "Beyond the dry run" is ``optimize``'s wall time minus the
dry run's (which includes timing, pickling checks and the thread probe): the machine probe (cached),
the planner and building the result.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from amorsize import optimize
from amorsize.workloads import WORKLOADS


def overhead(
    func: Callable[[Any], Any], make: Callable[[], Any], repeat: int
) -> tuple[float, float, float, int]:
    """Medians of: optimize() wall time, its dry run's wall time, its planning time; items run."""
    totals, dry, planning, items = [], [], [], []
    for _ in range(repeat):
        data = make()
        start = time.perf_counter()
        result = optimize(func, data, profile=True)
        totals.append(time.perf_counter() - start)
        assert result.profile is not None
        dry.append(result.profile.sampling_seconds)
        planning.append(result.profile.planning_seconds)
        items.append(result.n_sampled)
    return (
        statistics.median(totals),
        statistics.median(dry),
        statistics.median(planning),
        int(statistics.median(items)),
    )


def main() -> None:
    optimize(abs, range(10))  # import, calibrate (or load the calibration), warm caches
    print("| workload | optimize() | dry run (items run) | beyond the dry run | of which planning |")
    print("|---|---|---|---|---|")
    for workload in WORKLOADS:
        total, dry, plan, items = overhead(workload.func, workload.make_data, repeat=9)
        print(
            f"| {workload.name} | {total * 1e3:.1f} ms | {dry * 1e3:.1f} ms ({items}) | "
            f"{(total - dry) * 1e3:.1f} ms | {plan * 1e3:.2f} ms |"
        )


if __name__ == "__main__":
    main()
