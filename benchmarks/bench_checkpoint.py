"""What checkpointing costs per item: ``execute(..., checkpoint=path)`` against the same run without.

Run by hand (not in the test suite)::

    python benchmarks/bench_checkpoint.py            # 7 repeats, best of each
    python benchmarks/bench_checkpoint.py --quick    # 3 repeats, smaller inputs

Both variants run the same fixed plan (executor and workers fixed per workload, the chunk size
``optimize`` picks for them, then forced: no dry run, nothing left to chance) on warm pools,
alternating. Two figures per workload:

- *wall overhead per item*: (best time with checkpoint − best without) / items. Best of N, as
  ``timeit`` does: on a shared machine the other runs only add noise, never speed.
- *commit cost per item*: CPU time of the parent thread inside the checkpoint's commits (pickling
  the results, digesting each item's pickle, one SQLite transaction per chunk), divided by items.
  It is the cost itself, whether or not the workers hide it; thread CPU time, so waiting for the
  GIL or the disk is not counted.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from amorsize import execute, optimize
from amorsize.resilience.checkpoint import RunCheckpoint
from amorsize.workloads import busy


def square(x: int) -> int:
    return x * x


def record(x: int) -> dict[str, Any]:
    """A tiny item with a result of a realistic shape (a small dict)."""
    return {"id": x, "value": x * 0.5, "tag": "ok"}


@dataclass(frozen=True)
class Case:
    name: str
    func: Callable[[Any], Any]
    make: Callable[[], list[Any]]
    executor: str
    n_jobs: int


def cases(quick: bool) -> list[Case]:
    scale = 4 if quick else 1
    return [
        Case("1 ms items (busy)", busy, lambda: [0.001] * (2000 // scale), "processes", 2),
        Case("100 µs items (busy)", busy, lambda: [0.0001] * (10_000 // scale), "processes", 2),
        Case("tiny items (x*x)", square, lambda: list(range(100_000 // scale)), "serial", 1),
        Case("tiny items (small dict out)", record, lambda: list(range(100_000 // scale)), "serial", 1),
    ]


class CommitTimer:
    """Adds up the time spent in RunCheckpoint.commit (wrapped for the duration of the benchmark)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._original = RunCheckpoint.commit

    def __enter__(self) -> CommitTimer:
        original = self._original
        timer = self

        def timed(checkpoint: RunCheckpoint, *args: Any) -> None:
            start = time.thread_time()
            try:
                original(checkpoint, *args)
            finally:
                timer.seconds += time.thread_time() - start

        RunCheckpoint.commit = timed  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        RunCheckpoint.commit = self._original  # type: ignore[method-assign]


def measure(case: Case, repeats: int, directory: Path) -> dict[str, float]:
    data = case.make()
    plan = optimize(case.func, data, executor=case.executor, n_jobs=case.n_jobs)
    forced = {"executor": case.executor, "n_jobs": case.n_jobs, "chunksize": plan.chunksize}
    execute(case.func, data, **forced)  # warm the pool
    plain: list[float] = []
    checkpointed: list[float] = []
    commit_seconds: list[float] = []
    for repeat in range(repeats):
        start = time.perf_counter()
        execute(case.func, data, **forced)
        plain.append(time.perf_counter() - start)
        with CommitTimer() as timer:
            start = time.perf_counter()
            execute(case.func, data, checkpoint=directory / f"run-{repeat}.sqlite3", **forced)
            checkpointed.append(time.perf_counter() - start)
        commit_seconds.append(timer.seconds)
    n = len(data)
    base, with_ckpt = min(plain), min(checkpointed)
    return {
        "items": n,
        "plain_s": base,
        "ckpt_s": with_ckpt,
        "overhead_us": (with_ckpt - base) / n * 1e6,
        "overhead_pct": (with_ckpt / base - 1) * 100,
        "commit_us": statistics.median(commit_seconds) / n * 1e6,
        "executor": f"{case.executor}×{case.n_jobs}, chunks of {plan.chunksize}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats, a quarter of the items")
    args = parser.parse_args()
    repeats = 3 if args.quick else 7
    print(
        f"# bench_checkpoint — {platform.python_implementation()} {platform.python_version()}, "
        f"{psutil.cpu_count(logical=True)} logical cores, best of {repeats}"
    )
    print(
        f"{'workload':30} {'plan':32} {'items':>7} {'plain s':>8} {'ckpt s':>8} "
        f"{'µs/item':>8} {'overhead':>9} {'commit µs/item':>15}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases(args.quick):
            row = measure(case, repeats, Path(tmp))
            print(
                f"{case.name:30} {row['executor']:32} {row['items']:>7.0f} {row['plain_s']:>8.3f} "
                f"{row['ckpt_s']:>8.3f} {row['overhead_us']:>8.2f} {row['overhead_pct']:>8.1f}% "
                f"{row['commit_us']:>15.2f}"
            )


if __name__ == "__main__":
    main()
