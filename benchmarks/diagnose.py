"""Reproduce, in isolation, causes behind the suite's misses (the diagnosis in benchmarks/RESULTS.md).

Run by hand::

    python benchmarks/diagnose.py              # every diagnosis, 5 interleaved rounds each, medians
    python benchmarks/diagnose.py blas tail    # only some
    python benchmarks/diagnose.py --rounds 15 serial   # more rounds (first argument)

Each diagnosis times a few ways to run one workload, interleaved round by round (the machine may be
shared: only ratios within a diagnosis mean something), and prints what the planner chose.

- ``serial``: the runner's serial path against a plain loop, on 1M trivial items.
- ``fixed``: only ``execute()`` against the plain loop, on the same items (the suite's
  "never slower than serial by more than 10 %").
- ``blas``: BLAS work on threads with and without a BLAS thread cap, and what execute picks.
- ``io``: the dry run of sleeping items against the whole best run.
- ``tail``: long items at the end: the planned chunk size against smaller chunks.
- ``stream``: the same items as a generator and as a list.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from multiprocessing.pool import ThreadPool
from typing import Any

from threadpoolctl import threadpool_limits

from amorsize import execute
from amorsize.api import analyse, execute_planned
from amorsize.run.pools import shutdown_pools
from suite_workloads import _ms, _tail, matmul, nap, spin, square

ROUNDS = 5


def _time(run: Callable[[], Any]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def _cold(run: Callable[[], Any]) -> Callable[[], Any]:
    def wrapped() -> Any:
        shutdown_pools()
        return run()

    return wrapped


def compare(title: str, ways: dict[str, Callable[[], Any]]) -> dict[str, float]:
    """Time every way ROUNDS times, interleaved; print medians and ratios to the first."""
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(ROUNDS):
        for name, run in ways.items():
            times[name].append(_time(run))
    medians = {name: statistics.median(values) for name, values in times.items()}
    first = next(iter(medians.values()))
    print(f"\n## {title}")
    for name, value in medians.items():
        print(f"  {name:<48} {value:8.4f}s  ({value / first:5.2f}× the first)")
    return medians


def _plan(func: Callable[[Any], Any], data: Any) -> str:
    shutdown_pools()
    _, report, plan = execute_planned(func, data)
    assert plan is not None
    return (
        f"  execute planned {plan.executor} × {plan.n_jobs}, chunks of {plan.chunksize}: predicted run "
        f"{plan.predicted_parallel_time:.3f}s, measured {report.wall_seconds:.3f}s"
    )


def serial() -> None:
    data = list(range(1_000_000))
    compare(
        "serial: 1M × x*x",
        {
            "plain loop": lambda: [square(x) for x in data],
            "execute(executor='serial', chunksize=1M) (no dry run)": lambda: execute(
                square, data, executor="serial", n_jobs=1, chunksize=len(data)
            ),
            "execute() (dry run + plan + run)": lambda: execute(square, data),
        },
    )


def fixed() -> None:
    data = list(range(1_000_000))
    execute(square, data)  # imports, the store, the calibration: paid once per process
    compare(
        "fixed: 1M × x*x, execute() (analysis included) against the plain loop alone",
        {"plain loop": lambda: [square(x) for x in data], "execute()": lambda: execute(square, data)},
    )


def blas() -> None:
    data = list(range(300))

    def pool(limit: int) -> None:
        with threadpool_limits(limit), ThreadPool(2) as threads:
            threads.map(matmul, data, chunksize=10)

    def serial_capped() -> None:
        with threadpool_limits(1):
            [matmul(x) for x in data]

    compare(
        "blas: 300 × 250² matmul",
        {
            "serial (BLAS threads: default)": lambda: [matmul(x) for x in data],
            "serial, BLAS capped at 1": serial_capped,
            "ThreadPool(2), BLAS capped at 1 per process": lambda: pool(1),
            "ThreadPool(2), BLAS default (2 each)": lambda: pool(2),
            "execute threads × 2 (amorsize: no BLAS cap)": _cold(
                lambda: execute(matmul, data, executor="threads", n_jobs=2, chunksize=10)
            ),
            "execute processes × 2, all forced (no BLAS cap)": _cold(
                lambda: execute(matmul, data, executor="processes", n_jobs=2, chunksize=10)
            ),
            "execute processes × 2, blas_threads=1": _cold(
                lambda: execute(matmul, data, executor="processes", n_jobs=2, chunksize=10, blas_threads=1)
            ),
            "execute() (planned)": _cold(lambda: execute(matmul, data)),
        },
    )
    for _ in range(3):
        print(_plan(matmul, data))


def io() -> None:
    data = [0.005] * 400
    compare(
        "io: 400 × 5 ms sleep",
        {
            "execute() (dry run + plan + run)": _cold(lambda: execute(nap, data)),
            "the dry run + plan alone (api.analyse)": lambda: analyse(nap, data),
            "execute threads × 64, chunks of 1 (no dry run)": _cold(
                lambda: execute(nap, data, executor="threads", n_jobs=64, chunksize=1)
            ),
        },
    )


def tail() -> None:
    data = _tail(2_000)
    shutdown_pools()
    _, _, plan = execute_planned(spin, data)
    assert plan is not None
    size = plan.chunksize
    compare(
        f"tail: 1,800 × 0.2 ms then 200 × 10 ms (planned chunks of {size})",
        {
            "execute() (planned)": _cold(lambda: execute(spin, data)),
            f"processes × 2, chunks of {size} (the plan, no dry run)": _cold(
                lambda: execute(spin, data, executor="processes", n_jobs=2, chunksize=size)
            ),
            "processes × 2, chunks of 64": _cold(
                lambda: execute(spin, data, executor="processes", n_jobs=2, chunksize=64)
            ),
            "processes × 2, chunks of 16": _cold(
                lambda: execute(spin, data, executor="processes", n_jobs=2, chunksize=16)
            ),
            "serial loop": lambda: [spin(x) for x in data],
        },
    )


def stream() -> None:
    item = _ms(0.5)
    compare(
        "stream: 2,000 × 0.5 ms",
        {
            "execute(list)": _cold(lambda: execute(spin, [item] * 2_000)),
            "execute(generator)": _cold(lambda: execute(spin, (item for _ in range(2_000)))),
            "serial loop": lambda: [spin(item) for _ in range(2_000)],
        },
    )
    print(_plan(spin, (item for _ in range(2_000))))


DIAGNOSES: dict[str, Callable[[], None]] = {
    "serial": serial,
    "fixed": fixed,
    "blas": blas,
    "io": io,
    "tail": tail,
    "stream": stream,
}


def main(argv: list[str]) -> None:
    global ROUNDS
    if argv[:1] == ["--rounds"] and len(argv) >= 2 and argv[1].isdigit() and int(argv[1]) > 0:
        ROUNDS, argv = int(argv[1]), argv[2:]
    elif argv[:1] == ["--rounds"]:
        raise SystemExit("--rounds takes a positive whole number, e.g. --rounds 15")
    chosen = argv or list(DIAGNOSES)
    unknown = [name for name in chosen if name not in DIAGNOSES]
    if unknown:
        raise SystemExit(f"unknown diagnosis {unknown[0]!r}; choose from {', '.join(DIAGNOSES)}")
    for name in chosen:
        DIAGNOSES[name]()
    shutdown_pools()


if __name__ == "__main__":
    main(sys.argv[1:])
