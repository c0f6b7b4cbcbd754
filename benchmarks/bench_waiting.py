"""execute() on waiting work against the best thread count, found by trying them.

Run by hand (not in the test suite)::

    python benchmarks/bench_waiting.py             # every case, 5 rounds, medians
    python benchmarks/bench_waiting.py --quick     # one round
    python benchmarks/bench_waiting.py --only 20ms --repeat 9

Waiting work (sleeps standing in for network or disk I/O) runs fastest on many threads; how many
depends on the number of items and how long each waits. Each case times, in rounds, in one process:

- ``execute`` cold (its pools shut down first), analysis included;
- ``multiprocessing.pool.ThreadPool(k).map(..., chunksize=1)`` for k in :data:`THREAD_COUNTS` (up to
  one thread per item), thread start-up included — the best of these is the reference;
- ``concurrent.futures.ThreadPoolExecutor().map`` with its default ``min(32, cores + 4)`` threads,
  what a user writes without measuring.

The table gives each median and its ratio to the best ThreadPool (regret; lower is better), and the
plans ``execute`` chose.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gc
import multiprocessing.pool
import random
import statistics
import sys
import time
from collections.abc import Callable

from amorsize.api import execute_planned
from amorsize.run.pools import shutdown_pools
from amorsize.workloads import wait
from bench_execute import machine

#: Thread counts tried for the reference.
THREAD_COUNTS = (16, 32, 64, 128, 256)
#: (items, seconds each) of every case.
CASES = ((400, 0.001), (2000, 0.001), (400, 0.005), (1000, 0.005), (100, 0.02), (200, 0.05))
#: Pause before each timing: the previous contender's threads finish exiting.
SETTLE_SECONDS = 0.05


def _thread_pool(data: list[float], n_threads: int) -> float:
    started = time.perf_counter()
    pool = multiprocessing.pool.ThreadPool(n_threads)
    try:
        pool.map(wait, data, chunksize=1)
        return time.perf_counter() - started  # before the pool's shutdown
    finally:
        pool.terminate()
        pool.join()


def _executor_default(data: list[float]) -> float:
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor() as executor:
        list(executor.map(wait, data))
        return time.perf_counter() - started


def run_case(n_items: int, seconds: float, repeat: int) -> tuple[dict[str, list[float]], set[str]]:
    """Time every contender ``repeat`` times, in a shuffled order each round."""
    data = [seconds] * n_items
    plans: set[str] = set()

    def amorsize() -> float:
        shutdown_pools()
        started = time.perf_counter()
        _, report, result = execute_planned(wait, data)
        elapsed = time.perf_counter() - started
        assert result is not None
        if report.items_from_dry_run == n_items:
            plans.add("all in the dry run (a thread per item)")
        else:
            plans.add(f"{report.executor} × {report.n_workers}, cs {report.initial_chunksize}")
        return elapsed

    timers: dict[str, Callable[[], float]] = {
        "execute": amorsize,
        "ThreadPoolExecutor()": lambda: _executor_default(data),
    }
    for k in THREAD_COUNTS:
        if k <= n_items:
            timers[f"ThreadPool({k})"] = lambda k=k: _thread_pool(data, k)
    times: dict[str, list[float]] = {name: [] for name in timers}
    for round_ in range(repeat):
        order = list(timers)
        random.Random(round_).shuffle(order)
        for name in order:
            gc.collect()
            time.sleep(SETTLE_SECONDS)
            times[name].append(timers[name]())
    shutdown_pools()
    return times, plans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", default="", help="comma-separated case names, e.g. '400x5ms,100x20ms'")
    args = parser.parse_args()
    repeat = 1 if args.quick else args.repeat
    wanted = {word.strip() for word in args.only.split(",") if word.strip()}
    print(f"machine: {machine()}")
    print(f"command: python {' '.join(sys.argv)}  (median of {repeat})\n")
    print(
        "| case | serial (items × wait) | best ThreadPool | execute | regret "
        "| ThreadPoolExecutor() | regret | plans |"
    )
    print("|---|---|---|---|---|---|---|---|")
    regrets: list[float] = []
    for n_items, seconds in CASES:
        name = f"{n_items}x{seconds * 1e3:g}ms"
        if wanted and name not in wanted:
            continue
        times, plans = run_case(n_items, seconds, repeat)
        medians = {k: statistics.median(v) for k, v in times.items()}
        best_name = min((k for k in medians if k.startswith("ThreadPool(")), key=medians.__getitem__)
        best = medians[best_name]
        regret = medians["execute"] / best
        regrets.append(regret)
        default = medians["ThreadPoolExecutor()"]
        print(
            f"| {n_items} × {seconds * 1e3:g} ms | {n_items * seconds:.1f} s "
            f"| {best_name}: {best * 1e3:.1f} ms | {medians['execute'] * 1e3:.1f} ms | {regret:.2f} "
            f"| {default * 1e3:.0f} ms | {default / best:.1f} | {'; '.join(sorted(plans))} |",
            flush=True,
        )
    if regrets:
        mean = statistics.geometric_mean(regrets)
        print(f"\ngeometric mean regret of execute: {mean:.2f}; worst {max(regrets):.2f}")


if __name__ == "__main__":
    main()
