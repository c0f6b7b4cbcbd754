"""The most two processes can do on the 10 µs items of ``bench_execute.py``: the ceiling of its target.

Run by hand (not in the test suite)::

    python benchmarks/bench_ceiling.py               # 7 rounds, medians
    python benchmarks/bench_ceiling.py --repeat 15

Issue 3 asks ``execute`` for ≥ 1.85 × serial on 100,000 items of 10 µs (``busy(1e-5)``) on 2 cores.
This times, in alternating rounds of one process:

- serial: the plain loop;
- two pre-forked halves: one forked process per core, each started before the clock and waiting on
  an event, runs its half of the items in a plain loop and only says when it is done — no
  analysis, no worker start-up, no chunks, no results shipped. Nothing can beat it.

``serial / halves`` is the ceiling. What ``execute`` may spend on everything else (dry run,
planning, worker start, dispatch, results) to reach 1.85 × is ``serial / 1.85 − halves``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import time
from multiprocessing.synchronize import Event
from typing import Any

from amorsize.workloads import busy

N_ITEMS = 100_000
SECONDS = 0.00001
TARGET = 1.85
PAUSE = 0.2


def _half(start: Event, items: list[float], out: Any) -> None:
    start.wait()
    for item in items:
        busy(item)
    out.put(None)


def two_halves(data: list[float]) -> float:
    """Wall seconds for two pre-forked processes to run half of ``data`` each."""
    ctx = multiprocessing.get_context("fork")
    start, out = ctx.Event(), ctx.Queue()
    middle = len(data) // 2
    procs = [ctx.Process(target=_half, args=(start, part, out)) for part in (data[:middle], data[middle:])]
    for proc in procs:
        proc.start()
    try:
        time.sleep(PAUSE)  # both started and waiting
        began = time.perf_counter()
        start.set()
        out.get(timeout=60)
        out.get(timeout=60)
        return time.perf_counter() - began
    finally:
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join()


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    data = [SECONDS] * N_ITEMS
    serial: list[float] = []
    halves: list[float] = []
    for _ in range(args.repeat):
        time.sleep(PAUSE)
        began = time.perf_counter()
        for item in data:
            busy(item)
        serial.append(time.perf_counter() - began)
        time.sleep(PAUSE)
        halves.append(two_halves(data))
    s, h = statistics.median(serial), statistics.median(halves)
    print(f"command: python {' '.join(sys.argv)}  (median of {args.repeat})")
    print(f"serial {s:.3f} s · two pre-forked halves {h:.3f} s · ceiling {s / h:.2f}×")
    print(f"rounds: {', '.join(f'{a / b:.2f}×' for a, b in zip(serial, halves, strict=True))}")
    spare = 1e3 * (s / TARGET - h)
    print(f"{TARGET}× needs ≤ {s / TARGET:.3f} s: {spare:.0f} ms for everything but the items")


if __name__ == "__main__":
    main()
