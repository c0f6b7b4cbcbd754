"""A wall clock that stands still while the calling thread waits for a CPU.

On a busy machine the kernel may leave a runnable thread off the CPU for milliseconds while other
processes run. Timed with the wall clock, an item then looks slower than it is, and — since its CPU
time does not grow meanwhile — partly *waiting*: in one CI run a 4.6 ms SHA-256 got 0.57 ms of CPU
and was planned as waiting work, on many threads. Linux counts that time per thread (the run-queue
delay, the second field of ``/proc/<pid>/task/<tid>/schedstat``); this clock subtracts it.

Elsewhere (no schedstat: other systems, kernels without ``CONFIG_SCHED_INFO``) it is the wall
clock. A hypervisor taking the whole virtual CPU away is not seen by the guest's scheduler and
still counts as the item's time.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

from amorsize._closing import ClosingContext
from amorsize.measure.gil import own_gil_release, schedstat_delay

__all__ = ["RunQueueClock"]


def _read_delay(fd: int) -> float | None:
    """The thread's run-queue delay (seconds) from its open schedstat file, or None if unreadable.

    The read releases the GIL for a few µs: marked, so that a GIL canary does not read it as the
    items' (:func:`~amorsize.measure.gil.own_gil_release`).
    """
    try:
        with own_gil_release():
            text = os.pread(fd, 128, 0)
    except OSError:
        return None
    return schedstat_delay(text)


class RunQueueClock(ClosingContext):
    """``clock()`` minus the creating thread's run-queue delay (context manager; ~6 µs a reading).

    Only the thread that created it may read it (the delay is that thread's). The schedstat file
    stays open while the clock is in use: ``with RunQueueClock() as clock: ...``.

    Args:
        clock: the wall clock (seconds) to correct.

    Example:
        >>> with RunQueueClock() as clock:
        ...     start = clock()
        ...     _ = sum(range(100_000))
        ...     clock() - start > 0
        True
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._fd: int | None = None
        self._delay = 0.0  # the last reading: a failed one must not make the clock jump

    @property
    def corrects(self) -> bool:
        """Whether the run-queue delay is read here (open, and the system counts it)."""
        return self._fd is not None

    def __enter__(self) -> RunQueueClock:  # opens the file: not ClosingContext's
        if hasattr(os, "pread"):
            try:
                fd = os.open(f"/proc/self/task/{threading.get_native_id()}/schedstat", os.O_RDONLY)
            except OSError:
                return self
            delay = _read_delay(fd)
            if delay is None:
                os.close(fd)
            else:
                self._fd, self._delay = fd, delay
        return self

    def close(self) -> None:
        """Close the schedstat file (the clock is the wall clock again). Idempotent."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @property
    def wall(self) -> Callable[[], float]:
        """The wall clock this one corrects."""
        return self._clock

    def waited(self) -> float:
        """Seconds this thread has spent runnable but not running (0.0 where not counted).

        To time a short call without the reading's own ~6 µs in it: read this before starting
        :attr:`wall` and again after stopping it.
        """
        if self._fd is not None:
            delay = _read_delay(self._fd)
            if delay is not None:
                self._delay = delay
        return self._delay

    def __call__(self) -> float:
        """The wall clock, less the time this thread has spent runnable but not running."""
        if self._fd is None:
            return self._clock()
        waited = self.waited()  # first: a wait between the two readings then counts at most once
        return self._clock() - waited
