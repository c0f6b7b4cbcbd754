"""execute() against serial, ``multiprocessing.Pool.map`` and ``joblib.Parallel`` on the run targets.

Run by hand (not in the test suite)::

    python benchmarks/bench_execute.py            # every workload, 3 repeats, medians
    python benchmarks/bench_execute.py --quick    # one repeat, smaller inputs
    python benchmarks/bench_execute.py --only uniform --repeat 5

Every contender runs in this process, one after another, so the figures of one run compare as
ratios. ``execute`` is timed *cold* (its pools shut down before each timing, so it pays its dry
run, planning and worker start-up like ``Pool`` pays its start-up) and *warm* (pools reused).
Every timing starts after a short pause, so the previous contender's workers have exited.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import psutil

from amorsize import execute
from amorsize.run.pools import shutdown_pools
from amorsize.workloads import busy


def square(x: int) -> int:
    return x * x


def sleepy(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@dataclass(frozen=True)
class Case:
    name: str
    func: Callable[[Any], Any]
    make: Callable[[], list[Any]]


def cases(quick: bool) -> list[Case]:
    scale = 4 if quick else 1
    return [
        Case("trivial 200k × x*x", square, lambda: list(range(200_000 // scale))),
        Case(
            "skewed 1800×0.1ms + 200×10ms",
            busy,
            lambda: [0.0001] * (1800 // scale) + [0.01] * (200 // scale),
        ),
        Case("uniform 1 ms", busy, lambda: [0.001] * (2000 // scale)),
        Case("uniform 10 µs", busy, lambda: [0.00001] * (100_000 // scale)),
        Case("waiting 5 ms sleeps", sleepy, lambda: [0.005] * (400 // scale)),
    ]


#: Pause before each timing (not timed): workers that the previous contender shut down finish
#: exiting — their interpreters' teardown took 20–50 ms of the next run's 1 s on 2 cores.
SETTLE_SECONDS = 0.2


def time_it(run: Callable[[], Any]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def contenders(case: Case) -> dict[str, Callable[[], Any]]:
    from joblib import Parallel, delayed

    data = case.make()
    func = case.func

    return {
        "serial": lambda: [func(x) for x in data],
        "execute (cold)": lambda: execute(func, data),  # main() shuts the pools down before timing
        "execute (warm)": lambda: execute(func, data),
        "Pool.map default": lambda: _pool_map(func, data, None),
        "Pool.map chunksize=1": lambda: _pool_map(func, data, 1),
        "joblib n_jobs=-1": lambda: Parallel(n_jobs=-1)(delayed(func)(x) for x in data),
    }


def _shutdown_loky() -> None:
    from joblib.externals.loky import get_reusable_executor

    get_reusable_executor().shutdown(wait=True)


def _pool_map(func: Callable[[Any], Any], data: Iterable[Any], chunksize: int | None) -> list[Any]:
    with multiprocessing.Pool() as pool:
        return pool.map(func, data, chunksize=chunksize)


def machine() -> str:
    return (
        f"{platform.node()} · {platform.machine()} · {os.cpu_count()} logical / "
        f"{psutil.cpu_count(logical=False)} physical cores · "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB · "
        f"Python {platform.python_version()} · start method {multiprocessing.get_start_method()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", default="", help="comma-separated words: run the cases whose name has one")
    args = parser.parse_args()
    wanted = [word.strip() for word in args.only.split(",") if word.strip()]
    repeat = 1 if args.quick else args.repeat
    print(f"machine: {machine()}")
    print(f"command: python {' '.join(sys.argv)}  (median of {repeat})\n")
    names = list(contenders(cases(True)[0]))
    print("| workload | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for case in cases(args.quick):
        if wanted and not any(word in case.name for word in wanted):
            continue
        runs = contenders(case)
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(repeat):
            for name, run in runs.items():
                if name == "execute (cold)":
                    shutdown_pools()  # outside the timing: joining the old workers is not this run's cost
                # joblib's idle loky workers are shut down before every timing: joblib runs cold like
                # the others, and no contender runs beside another library's idle workers
                _shutdown_loky()
                time.sleep(SETTLE_SECONDS)
                times[name].append(time_it(run))
        serial = statistics.median(times["serial"])
        cells = []
        for name in names:
            median = statistics.median(times[name])
            cells.append(f"{median:.3f}s" if name == "serial" else f"{median:.3f}s ({serial / median:.2f}×)")
        print(f"| {case.name} | " + " | ".join(cells) + " |", flush=True)
    shutdown_pools()


if __name__ == "__main__":
    main()
