"""How much of the time a function holds the GIL, read by a canary thread while the dry run runs.

A two-thread speedup probe answers "does it release the GIL?" only as well as the second core is
free and the window is long: 30 ms probes of work that really scales 2× read 1.31–1.87× on this
project's 2-core machines. The canary asks the question directly. While the calling thread runs
items, a second thread sleeps a few hundred microseconds at a time (a random length, so that its
wake-ups do not lock to the items' rhythm) and measures how late it wakes:

- if the items release the GIL (hashlib on large buffers, NumPy, I/O), it gets the GIL back at
  once: ~80–100 µs late here, the kernel's timer slack;
- if the items hold it (pure Python), it waits for the interpreter's forced switch — the switch
  interval, set to :data:`SWITCH_INTERVAL` while the canary runs: ~1.2 ms late.

The share of wake-ups later than :data:`HELD_LATENESS` estimates the share of the time the GIL is
held (a wake-up lands in a held stretch with that probability, whatever the stretches' length):
measured here over 30 ms, SHA-256 of 4 MB 0.00–0.05, NumPy 250² matmul 0.0–0.13, a 1 MB checksum
half in C (``sum(blob[::16]) + crc32``) ~0.5, pure Python 0.86–1.0 while the canary's first
wake-up was counted (1.0 since), sleeping 0.0. It needs no free core beyond the canary's brief
wake-ups.

Other processes on the machine delay both threads, each in its own way (Linux corrects both):

- **The measured thread.** Pure Python hands the GIL to the canary at each forced switch; if its
  thread then waits for a CPU, the GIL lies free until it gets one, and the canary — which slept,
  so the scheduler favours it — wakes on time again and again: beside a busy process per CPU, pure
  Python read 0.16–0.43 held (0.89–1.0 corrected). A wake-up that finds the GIL free while the
  measured thread is runnable but ran less than half the time since the previous wake-up says
  nothing about the items, and is not counted (that thread's CPU clock and its state in ``/proc``).
- **The canary.** Its own wait for a CPU would read as waiting for the GIL, toward "held": SHA-256
  beside four busy processes per CPU read 0.05–0.92 without this correction, 0.0–0.04 with it.
  Its run-queue delay (``schedstat``, read without letting go of the GIL) is subtracted from each
  lateness.

On a free-threaded build there is no GIL: the canary is not used.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import TracebackType

__all__ = [
    "HELD_LATENESS",
    "MIN_SAMPLES",
    "SWITCH_INTERVAL",
    "GilCanary",
    "free_threaded",
    "own_gil_release",
    "schedstat_delay",
]

#: The interpreter's switch interval while the canary runs (seconds; CPython's default is 5 ms).
#: A shorter interval gives more samples per second of held work, and costs the items a forced
#: switch per interval (~1–2 % of pure-Python time at 1 ms).
SWITCH_INTERVAL = 0.001

#: The canary's mean sleep between wake-ups (seconds). Each sleep is drawn uniformly from
#: ``[0, 2 × CANARY_SLEEP]``: with a fixed sleep the wake-ups lock to the items' rhythm. An item
#: half in C (``sum(blob[::16]) + crc32`` of 1 MB: 0.26 ms holding the GIL, then 0.2 ms without)
#: hands the GIL to the canary as its C part starts; a fixed 0.2 ms sleep then ends in the next
#: held part, every time: it read 0.75–1.0 held, and the plan was serial where two threads ran
#: 1.29× as fast. Random sleeps read 0.41–0.62 (the held share of its time is 0.57), and pure
#: Python (1.0), SHA-256, NumPy and sleeping (0.0–0.02) read as before.
CANARY_SLEEP = 0.0002

#: The canaries' random sleeps (seeded: only their independence from the items matters; made once,
#: not in each canary thread as it starts).
_NAPS = random.Random(0x6A17)

#: A wake-up later than this waited for the GIL (seconds): well above the ~100 µs of timer slack,
#: well below the ~1.2 ms of a forced switch.
HELD_LATENESS = 0.25 * SWITCH_INTERVAL

#: Fewer wake-ups than this say too little (a dry run of a couple of milliseconds).
MIN_SAMPLES = 4


class GilCanary:
    """Measure the share of time other threads of this process hold the GIL (context manager).

    Example:
        >>> import hashlib
        >>> with GilCanary() as canary:
        ...     for _ in range(20):
        ...         _ = hashlib.sha256(b"x" * 4_000_000).digest()
        >>> canary.held_fraction is not None and canary.held_fraction < 0.5
        True
    """

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._lateness: list[float] = []
        self._woke: list[float] = []
        self._thread: threading.Thread | None = None
        self.held_fraction: float | None = None
        self.n_samples = 0
        self._cpu = 0.0  # the canary thread's CPU seconds at its latest wake-up
        self._measured: _MeasuredThread | None = None

    @property
    def cpu_seconds(self) -> float:
        """CPU seconds the canary thread has used so far (updated at each of its wake-ups).

        Process CPU clocks count the canary's wake-ups too: ~0.5 ms in a 5 ms sleep, which read as
        11 % CPU for work that uses 1 %. Subtract this from such a clock's readings
        (:meth:`without_canary`).
        """
        return self._cpu

    def without_canary(self, cpu_clock: Callable[[], float]) -> Callable[[], float]:
        """``cpu_clock`` (a process CPU clock) minus the canary's own CPU time.

        Example:
            >>> with GilCanary() as canary:
            ...     clock = canary.without_canary(time.process_time)
            ...     started = clock()
            ...     time.sleep(0.01)
            ...     clock() - started < 0.002
            True
        """
        return lambda: cpu_clock() - self._cpu

    def __enter__(self) -> GilCanary:
        if free_threaded():
            return self
        _shorten_switch_interval()
        self._measured = _MeasuredThread.current()
        self._thread = threading.Thread(target=self._watch, name="amorsize-gil-canary", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        if self._measured is not None:
            self._measured.close()
        _restore_switch_interval()
        self.n_samples = len(self._lateness[:-1])
        self.held_fraction = self.held_since(-float("inf"))

    def wake_ups(self) -> int | None:
        """Wake-ups counted so far (the reading's, :attr:`held_fraction`); None if not watching.

        While the canary runs: for deciding whether the items measured so far give it enough
        (:data:`MIN_SAMPLES`, and one more, whose wake-up may come after the items).
        """
        if self._thread is None:
            return None
        return len(self._woke)

    def held_since(self, since: float) -> float | None:
        """The held share over the wake-ups after ``since`` (a ``time.perf_counter()`` reading).

        For leaving out a first call that was mostly one-time start-up (an import holds the GIL).
        None while the canary runs, or with fewer than :data:`MIN_SAMPLES` wake-ups after ``since``.
        """
        if self._thread is None or self._thread.is_alive():
            return None
        # the last wake-up came after the items had stopped
        wakes = zip(self._lateness[:-1], self._woke[:-1], strict=True)
        lateness = [late for late, woke in wakes if woke >= since]
        if len(lateness) < MIN_SAMPLES:
            return None
        return sum(1 for late in lateness if late > HELD_LATENESS) / len(lateness)

    def _watch(self) -> None:
        clock, sleep, stop, cpu = time.perf_counter, time.sleep, self._stop, time.thread_time
        draw, longest = _NAPS.random, 2.0 * CANARY_SLEEP
        lateness, woke, measured = self._lateness, self._woke, self._measured
        own_delay = _OwnRunQueueDelay.open()
        previous = clock()
        # The first wake-up, ~0.2 ms after the start, is not counted: it lands while the caller is
        # still on its way to the items (this thread's start, the dry run's set-up). Inside the
        # benchmark suite it was the only on-time wake-up of large-output's pure Python (0.875–0.89
        # held instead of 1.0, 2 dry runs in 15); at 0.8 (one in five) the plan is threads × 2.
        first = True
        try:
            while not stop.is_set():
                nap = draw() * longest
                started = clock()
                sleep(nap)
                now = clock()
                self._cpu = cpu()
                # late for the GIL, not for a CPU: other processes may have kept the canary waiting
                late = now - started - nap - (own_delay.waited() if own_delay is not None else 0.0)
                # first: how far the measured thread got since the previous wake-up
                stalled = measured is not None and measured.stalled(now - previous)
                previous = now
                if first:
                    first = False
                    continue
                if late <= HELD_LATENESS:
                    if _own_releases:  # the GIL came free for Amorsize's own read, not the items'
                        continue
                    if stalled:  # free because its thread waits for a CPU, not because the items let go
                        continue
                woke.append(now)
                lateness.append(late)
        finally:
            if own_delay is not None:
                own_delay.close()


def schedstat_delay(text: bytes) -> float | None:
    """The run-queue delay (seconds) in a thread's ``schedstat`` contents, or None if malformed.

    Example:
        >>> schedstat_delay(b"81514017 208794837 54")
        0.208794837
    """
    try:
        return int(text.split()[1]) * 1e-9
    except (ValueError, IndexError):
        return None


class _OwnRunQueueDelay:
    """The calling thread's run-queue delay, read without letting go of the GIL (Linux; ~10 µs).

    ``os.pread`` releases the GIL; the canary, reading after each late wake-up, would then wait a
    switch interval to get it back from pure Python. A libc call through :class:`ctypes.PyDLL`
    keeps it.
    """

    def __init__(self, fd: int, pread: Callable[..., int]) -> None:
        self._fd, self._pread = fd, pread
        self._buffer = ctypes.create_string_buffer(128)
        self._delay = self._read() or 0.0

    @classmethod
    def open(cls) -> _OwnRunQueueDelay | None:
        """The calling thread's reader, or None where the delay is not counted or not readable."""
        try:
            pread = ctypes.PyDLL(None).pread
            pread.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_long]
            pread.restype = ctypes.c_ssize_t
            fd = os.open(f"/proc/self/task/{threading.get_native_id()}/schedstat", os.O_RDONLY)
        except (AttributeError, OSError, TypeError):  # no libc symbols (Windows), no /proc
            return None
        reader = cls(fd, pread)
        if reader._read() is None:
            reader.close()
            return None
        return reader

    def _read(self) -> float | None:
        size = self._pread(self._fd, self._buffer, len(self._buffer), 0)
        if size <= 0:  # -1: an error (errno); the buffer still holds an earlier reading
            return None
        return schedstat_delay(self._buffer.raw[:size])

    def waited(self) -> float:
        """Seconds spent waiting for a CPU since the previous call."""
        delay = self._read()
        if delay is None:
            return 0.0
        waited, self._delay = delay - self._delay, delay
        return waited

    def close(self) -> None:
        os.close(self._fd)


class _MeasuredThread:
    """The thread a canary measures: whether it is waiting for a CPU (Linux; elsewhere never)."""

    def __init__(self, cpu_clock_id: int, stat_fd: int) -> None:
        self._clock_id = cpu_clock_id
        self._fd = stat_fd
        self._cpu = time.clock_gettime(cpu_clock_id)

    @classmethod
    def current(cls) -> _MeasuredThread | None:
        """The calling thread, or None where its CPU clock or state cannot be read."""
        if not hasattr(time, "pthread_getcpuclockid") or not hasattr(os, "pread"):
            return None
        try:
            clock_id = time.pthread_getcpuclockid(threading.get_ident())
            fd = os.open(f"/proc/self/task/{threading.get_native_id()}/stat", os.O_RDONLY)
        except OSError:
            return None
        return cls(clock_id, fd)

    def stalled(self, elapsed: float) -> bool:
        """Whether the thread is runnable but ran under half of the last ``elapsed`` seconds.

        Called from the canary thread. A thread that waits (I/O, a lock) is not runnable; one
        running C code without the GIL keeps using CPU: neither is stalled.
        """
        try:
            used = time.clock_gettime(self._clock_id)
        except OSError:
            return False
        ran, self._cpu = used - self._cpu, used
        if ran >= 0.5 * elapsed:
            return False
        try:
            stat = os.pread(self._fd, 512, 0)
        except OSError:
            return False
        # "pid (comm) state ...": the command may hold spaces and parentheses
        state = stat.rfind(b")") + 2
        return stat[state : state + 1] == b"R"

    def close(self) -> None:
        os.close(self._fd)


#: Blocking reads Amorsize makes between items in a measured thread (the run-queue readings) release
#: the GIL for a few µs each. A canary waiting for the GIL gets it then, early, and would read pure
#: Python as partly GIL-free: four items of large-output (2 ms of pure Python and a 1 MB result
#: each) read 0.5–0.9 held with two ~6 µs reads per item, 1.0 without, and were planned on threads.
#: A wake-up that finds one of these under way (it holds the GIL, so the reader is inside the read)
#: is not counted.
_own_releases: list[None] = []


@contextlib.contextmanager
def own_gil_release() -> Iterator[None]:
    """Mark a short blocking call of Amorsize's own, so canaries ignore the GIL it frees.

    Example:
        >>> import os
        >>> with own_gil_release():
        ...     _ = os.getpid()
    """
    _own_releases.append(None)
    try:
        yield
    finally:
        _own_releases.pop()


# Canaries may overlap (dry runs in several threads at once): the first sets the short switch
# interval, the last puts the caller's back.
_interval_lock = threading.Lock()
_interval_users = 0
_saved_interval = 0.0


def _shorten_switch_interval() -> None:
    global _interval_users, _saved_interval
    with _interval_lock:
        if _interval_users == 0:
            _saved_interval = sys.getswitchinterval()
            sys.setswitchinterval(SWITCH_INTERVAL)
        _interval_users += 1


def _restore_switch_interval() -> None:
    global _interval_users
    with _interval_lock:
        _interval_users -= 1
        if _interval_users == 0:
            sys.setswitchinterval(_saved_interval)


def free_threaded() -> bool:
    """True on a Python build running without the GIL."""
    is_gil_enabled: Callable[[], bool] | None = getattr(sys, "_is_gil_enabled", None)
    return is_gil_enabled is not None and not is_gil_enabled()
