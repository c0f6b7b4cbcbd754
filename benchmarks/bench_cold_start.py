"""Where a cold ``execute`` of 100,000 × 10 µs items spends its time, against ``Pool.map``.

Run by hand (not in the test suite)::

    python benchmarks/bench_cold_start.py                 # 9 rounds, medians
    python benchmarks/bench_cold_start.py --repeat 15
    python benchmarks/bench_cold_start.py --ab pipes      # grown worker pipes against 64 KiB ones

Issue 3's last target (``bench_execute.py``'s "uniform 10 µs", cold) asks for ≥ 1.85 × serial. This
times, in alternating rounds of one process (NumPy imported, as ``bench_execute.py`` has it through
joblib), every pool shut down before each timing:

- ``serial``: the plain loop;
- ``analysis``: ``optimize`` alone (the dry run, the probes, the plan; no pool is started);
- ``our pool``: a two-worker ``ProcessBackend`` until both workers returned a one-item chunk;
- ``Pool(2)``: ``multiprocessing.Pool(2)`` until both returned a one-item chunk;
- ``execute cold`` and ``Pool.map`` (default chunks) on the whole input.

``execute cold − Pool.map`` is close to ``analysis`` minus the dry run's items (which count as
results): both start the same kind of pool, and only ``execute`` plans.

``--ab pipes`` alternates cold ``execute`` with the worker pipes grown (``PIPE_SIZE``) and at the
default size (``PIPE_BUDGET`` = 0), the measurement behind that change.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time
from collections.abc import Callable

from amorsize import execute, optimize
from amorsize.run.backend import ChunkTask, FunctionRef
from amorsize.run.backends import processes
from amorsize.run.pools import shutdown_pools
from amorsize.workloads import busy

N_ITEMS = 100_000
ITEM_SECONDS = 1e-5
PAUSE = 0.25  # before each timing: the previous contender's workers finish exiting


def _our_pool() -> None:
    with processes.ProcessBackend(2, start_method="fork", blas_threads=1) as backend:
        ref = FunctionRef.create(busy)
        futures = [backend.submit(ChunkTask(i, i, [ITEM_SECONDS], ref)) for i in range(2)]
        for future in futures:
            future.result(30)


def _stdlib_pool() -> None:
    with multiprocessing.get_context("fork").Pool(2) as pool:
        pool.map(busy, [ITEM_SECONDS] * 2, chunksize=1)


def _pool_map(data: list[float]) -> None:
    with multiprocessing.get_context("fork").Pool(2) as pool:
        pool.map(busy, data)


def _timed(run: Callable[[], object]) -> float:
    shutdown_pools()
    time.sleep(PAUSE)
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--ab", choices=["pipes"], help="alternate one change on and off instead")
    args = parser.parse_args()
    try:
        import numpy  # noqa: F401  (as in bench_execute.py, where joblib imports it)
    except ImportError:
        print("(NumPy is not installed: timings without it)")
    data = [ITEM_SECONDS] * N_ITEMS
    execute(busy, data[:20_000])  # calibration and imports outside the timings

    if args.ab == "pipes":
        budget = processes.PIPE_BUDGET
        on: list[float] = []
        off: list[float] = []
        for _ in range(args.repeat):
            for setting, times in ((budget, on), (0, off)):
                processes.PIPE_BUDGET = setting
                times.append(_timed(lambda: execute(busy, data)))
        processes.PIPE_BUDGET = budget
        shutdown_pools()
        grown, default = statistics.median(on) * 1e3, statistics.median(off) * 1e3
        print(f"cold execute, {args.repeat} rounds, medians:")
        print(f"  pipes of {processes.PIPE_SIZE // 1024} KiB {grown:.1f} ms; of 64 KiB {default:.1f} ms")
        return

    contenders: dict[str, Callable[[], object]] = {
        "serial": lambda: [busy(x) for x in data],
        "analysis (optimize)": lambda: optimize(busy, data),
        "our pool, 2 results": _our_pool,
        "Pool(2), 2 results": _stdlib_pool,
        "execute cold": lambda: execute(busy, data),
        "Pool.map": lambda: _pool_map(data),
    }
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(args.repeat):
        for name, run in contenders.items():
            times[name].append(_timed(run))
    shutdown_pools()
    serial = statistics.median(times["serial"])
    print(f"{N_ITEMS:,} × {ITEM_SECONDS * 1e6:.0f} µs items, {args.repeat} rounds, medians (ms):")
    for name, values in times.items():
        median = statistics.median(values)
        ratio = f"  ({serial / median:.2f}× serial)" if name in ("execute cold", "Pool.map") else ""
        print(f"  {name:22s} {median * 1e3:8.1f}{ratio}")
    gap = statistics.median(times["execute cold"]) - statistics.median(times["Pool.map"])
    print(f"  execute cold − Pool.map: {gap * 1e3:+.1f} ms")


if __name__ == "__main__":
    main()
