"""Streaming a million items, dispatch cost per item, and how fast a killed worker is reported.

Run by hand::

    python benchmarks/bench_streaming.py

- *Streaming memory*: ``imap`` over a generator of 1,000,000 items on two process workers; the
  parent's peak RSS growth over the run (results are consumed and dropped as they come).
- *Amortised dispatch*: parent CPU seconds per item for the same run (the work itself runs in the
  workers, so parent CPU is the cost of cutting, pickling, sending, receiving and yielding).
- *Death latency*: a worker SIGKILLs itself mid-run; time from the kill to ``WorkerDiedError``.
"""

from __future__ import annotations

import os
import signal
import statistics
import threading
import time
from collections.abc import Iterator

import psutil

from amorsize import WorkerDiedError, execute, imap
from amorsize.run.pools import shutdown_pools


def square(x: int) -> int:
    return x * x


def kill_self_at(x: float | str) -> float | str:
    """Sleep 1 ms; an item that is a path: write the time there, then SIGKILL this worker."""
    if isinstance(x, str):  # the path travels in the item: pooled workers keep their old environ
        with open(x, "w") as out:
            out.write(repr(time.time()))
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.001)
    return x


class PeakRSS:
    """Samples the parent's RSS every 5 ms in a thread."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.base = self.process.memory_info().rss
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def stream(n: int) -> tuple[float, float, float]:
    """(wall seconds, parent CPU µs per item, peak RSS growth MB) for imap over n items."""

    def source() -> Iterator[int]:
        yield from range(n)

    cpu = time.process_time()
    start = time.perf_counter()
    with PeakRSS() as rss:
        count = 0
        for _ in imap(square, source(), executor="processes", n_jobs=2):
            count += 1
    wall = time.perf_counter() - start
    assert count == n
    return wall, (time.process_time() - cpu) / n * 1e6, (rss.peak - rss.base) / 1e6


def death_latency(tmp: str) -> float:
    data: list[float | str] = [0.001] * 200 + [tmp] + [0.001] * 200
    try:
        execute(kill_self_at, data, executor="processes", n_jobs=2, chunksize=4)
    except WorkerDiedError:
        seen = time.time()
    else:  # pragma: no cover
        raise AssertionError("the worker death was not reported")
    with open(tmp) as handle:
        killed = float(handle.read())
    return seen - killed


def main() -> None:
    print(f"load average before: {os.getloadavg()}")
    wall, per_item, growth = stream(1_000_000)
    print(f"imap, 1,000,000 items, processes × 2: {wall:.2f} s wall, parent CPU {per_item:.2f} µs/item, ")
    print(f"  parent peak RSS growth {growth:.1f} MB")
    latencies = [death_latency(f"/tmp/amorsize-kill-{os.getpid()}-{i}") for i in range(9)]
    print(
        f"worker SIGKILL → WorkerDiedError: median {statistics.median(latencies) * 1e3:.1f} ms, "
        f"max {max(latencies) * 1e3:.1f} ms (9 runs)"
    )
    shutdown_pools()


if __name__ == "__main__":
    main()
