"""The dry run: call ``func`` on the first items, measure it, and keep what it computed.

::

    data ──iter──► [serial phase: item by item, timed]──► [thread probe, when needed]──► rest
                       │ wall, CPU, pickled sizes;               │ waiting work: 16 threads;
                       │ a GIL canary thread alongside           │ BLAS: capped, 2 threads
                       ▼                                         ▼
                    Profile  +  results of every sampled item (reused by execute: never run twice)

Rules the dry run keeps:

- **No data is lost.** Items are taken with ``itertools.islice``; for an iterator or generator the
  sampled items are chained back in front of the rest (:meth:`Sample.data`), nothing else is
  materialised.
- **Timing is not distorted.** Each call is timed alone (``perf_counter`` and ``process_time``);
  pickling and memory accounting happen outside the timed region, and peak memory comes from the
  kernel's high-water mark (:mod:`amorsize.measure.memory`), not tracemalloc. The time the thread
  waited for a CPU while other processes ran is left out (:mod:`amorsize.measure.runqueue`, see
  :data:`RUN_QUEUE_ITEM_SECONDS`): it is neither the item's work nor its waiting.
- **Sampling adapts.** At least one item; up to ``sample_size`` while cheap; more (up to
  :data:`MAX_SAMPLES`) when items are very fast or durations vary; and it stops early when the items
  are heavy, so the serial dry run costs about :data:`SAMPLE_FRACTION` of the estimated serial time.
- **GIL release is measured, not guessed.** A canary thread (:mod:`amorsize.measure.gil`) reads
  how much of the serial phase's time the items held the GIL (:attr:`Profile.gil_held`). When the
  serial phase was too short for it, a few further items run on two threads at once; their combined
  wall time against the serial estimate gives :attr:`Profile.thread_speedup`.
- **One-time work is not the item's cost.** A first call much slower than every later one (an
  import inside the function, a cache filled) gets the later calls' mean, with a warning.
- **Long sequences are also sampled further along.** A few items at spread later positions show an
  input sorted by size; their results are kept too (:attr:`Sample.later`).
- **Waiting work is sampled against its parallel run.** Items whose CPU time is under half their
  wall time will overlap on many threads, so the serial phase gets :data:`WAIT_OVERLAP` times less
  budget, and no more than :data:`SAMPLE_FRACTION` of the quickest threaded run (often one item);
  the probe runs :data:`WAIT_PROBE_THREADS` threads at once — unless it would cost more than a
  tenth of that run (:data:`WAIT_PROBE_RUN_SHARE`). For ``execute``, a short input whose first
  item waits runs whole, a thread per item, while that item waits (:data:`HEAD_START_AFTER`).
"""

from __future__ import annotations

import contextlib
import dis
import itertools
import math
import operator
import os
import pickle
import statistics
import threading
import time
import types
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import cloudpickle

from amorsize._native import blas_controller, blas_modules_loaded, limited_quietly
from amorsize.core.types import IO_BOUND_CPU_RATIO, MAX_WAIT_THREADS, Profile, pstdev
from amorsize.errors import ConfigurationError, SamplingError
from amorsize.measure.gil import MIN_SAMPLES as MIN_CANARY_SAMPLES
from amorsize.measure.gil import GilCanary, free_threaded
from amorsize.measure.memory import PeakMemory
from amorsize.measure.runqueue import RunQueueClock

__all__ = [
    "MAX_SAMPLES",
    "SAMPLE_FRACTION",
    "Sample",
    "blas_threads_loaded",
    "input_length",
    "sample",
]

#: Upper bound on serially sampled items: enough for a stable mean and CV of fast, varied items.
MAX_SAMPLES = 256

#: The serial phase stops once it has spent this fraction of the estimated serial run time
#: (at least one item is always run). 2 % keeps the original tool's worst case — 5 serial samples of
#: 150 ms items over 8 items, 25 × the best plan — down to a single item.
SAMPLE_FRACTION = 0.02

#: Whatever the estimate, the serial phase stops after this many seconds (items beyond the first).
MAX_SAMPLE_SECONDS = 0.25

#: Fast items are sampled until at least this much time has been measured, so the mean is not
#: dominated by timer resolution (perf_counter costs ~50–100 ns a call here).
MIN_SAMPLE_SECONDS = 0.002

#: The thread probe aims at this much wall time per thread. Measured on this project's 2-core
#: machines (hashlib on 4 MB, 8 probes each): 10 ms probes read 0.99–1.78× for work that really
#: scales 2×, 30 ms probes 1.31–1.87×, 100 ms probes 1.86–2.0× — short windows catch the second
#: core waking up. The probed items are real work whose results are kept, so little is wasted.
PROBE_TARGET_SECONDS = 0.03
#: The probe is skipped for items slower than this (two heavy items on threads teach little for
#: their cost) and faster than :data:`PROBE_MIN_ITEM_SECONDS` (threads cannot win on such items).
PROBE_MAX_ITEM_SECONDS = 0.05
PROBE_MIN_ITEM_SECONDS = 5e-6
PROBE_MAX_ITEMS_PER_THREAD = 512
#: The probe may cost at most this fraction of the estimated serial run time (it runs items at up
#: to serial speed); a run too small to afford one item per thread is not probed — the planner
#: then assumes the CPU part holds the GIL, which can only err towards processes or serial.
PROBE_FRACTION = 0.05

#: Items faster than this (median of the first ``sample_size``) are timed :data:`FAST_BATCH` at a
#: time: a clock read costs ~50–100 ns, so a 70 ns item timed alone read ~200 ns and the serial time
#: of 1M such items was predicted 2.4× too long.
FAST_ITEM_SECONDS = 5e-6
FAST_BATCH = 64
BATCH_OUTLIER = 4.0

#: Waiting work (CPU under :data:`~amorsize.core.types.IO_BOUND_CPU_RATIO` of wall time) runs on
#: many threads at once, so its dry run is budgeted against a run this many times faster than serial:
#: 400 × 5 ms sleeps run in ~0.06 s on 64 threads, and 2 % of the 2 s serial time (40 ms) was 70 %
#: of it. One item already shows that an item waits; the wide probe below adds more.
WAIT_OVERLAP = 16
#: Items faster than this are not judged waiting by their CPU time (the CPU clock is too coarse).
WAIT_MIN_ITEM_SECONDS = 200e-6
#: The probe of waiting work: this many threads at once (how far waiting overlaps is what sets the
#: thread count, and two threads cannot tell 8 from 64) …
WAIT_PROBE_THREADS = 16
#: … each running items for about this long (at least one item each).
WAIT_PROBE_SECONDS = 0.005
#: A wide probe's per-item durations join the profile (they show how items vary) only when the
#: threads overlapped at least this well; otherwise contention inflated them.
WAIT_PROBE_OVERLAP = 0.75
#: Waiting work is not probed when the probe (an item's time, at least :data:`WAIT_PROBE_SECONDS`,
#: plus starting its threads) would cost more than this share of the quickest run threads could
#: make of the rest, and the serial phase showed nothing that keeps the waits from overlapping
#: (:func:`_overlap_evident`). The probe's answer matters little there: waits that do not overlap
#: (a lock, a server that takes one request at a time) run on many threads about as fast as
#: serially. 400 × 5 ms sleeps: the probe took ~8 ms of a ~45 ms run; 100 × 20 ms sleeps: ~22 ms
#: of a ~35 ms run.
WAIT_PROBE_RUN_SHARE = 0.1
#: … that run estimated with this cost of starting a thread (64 ``threading.Thread`` starts took
#: 6.4–9.3 ms here; see :func:`_quickest_threaded_run`).
THREAD_START_SECONDS = 120e-6
#: Waiting items overlap on threads only if they wait without the GIL (the canary's held share
#: under this) …
WAIT_GIL_HELD = 0.5
#: … and without child processes computing for them (their CPU under this share of the wall time:
#: ``subprocess.run`` of a CPU-bound program waits here while using a core elsewhere).
WAIT_CHILD_CPU_SHARE = 0.25
#: ``execute``'s dry run of a short input (:func:`sample`'s ``head_start``): when the first item is
#: still running after this many seconds, having used under :data:`HEAD_START_CPU_SHARE` of that
#: time in CPU (its own thread's clock) with the GIL free (the watcher got it) and no new child
#: process, it waits; if the rest is at most :data:`HEAD_START_ITEMS` items, each then starts on a
#: thread of its own at once. Otherwise the first item's whole wait came before any other: 100 ×
#: 20 ms sleeps took ~55 ms where a thread per item takes ~35, a ~20 ms item then a ~35 ms run.
HEAD_START_AFTER = 0.002
HEAD_START_CPU_SHARE = 0.1
#: … as many threads as the planner may give waiting work,
HEAD_START_ITEMS = MAX_WAIT_THREADS
#: … and only while the available memory (cgroup limits included) allows this much per item: what
#: an item will allocate once its wait ends is not known yet (the planner, later, limits threads by
#: the first item's measured peak). 256 items need 16 GiB available; 2 GiB allow 32.
HEAD_START_ITEM_MEMORY = 64 * 2**20

#: Below this wall time a call's CPU time is capped at its wall time: reading the process CPU
#: clock costs ~0.3–1 µs here, which would otherwise make tiny items look multi-threaded.
CPU_CLOCK_FLOOR = 50e-6

_MUTABLE_GLOBAL_TYPES = (list, dict, set, bytearray)


@dataclass(frozen=True)
class Sample:
    """The outcome of a dry run.

    Attributes:
        profile: what was measured.
        items: the items that were run, in input order (serial phase then probe).
        results: their results, same order: ``execute`` emits these instead of running them again.
        later: ``(position, item, result)`` of the items sampled further along a long sequence
            (see :data:`SPREAD_POINTS`), in input order; ``execute`` emits these too.
        warnings: things the user should know (e.g. the function pickles only with cloudpickle).
        process_caveats: reasons process workers may behave differently from the caller (mutated
            module globals); shown when a process plan is chosen.
        seconds: wall time the dry run took, measuring included.
    """

    profile: Profile
    items: tuple[Any, ...]
    results: tuple[Any, ...]
    warnings: tuple[str, ...]
    process_caveats: tuple[str, ...]
    seconds: float
    later: tuple[tuple[int, Any, Any], ...] = ()
    _source: Iterable[Any] = field(repr=False, default=())
    _remaining: Iterator[Any] = field(repr=False, default_factory=lambda: iter(()))
    _reiterable: bool = field(repr=False, default=True)

    @property
    def n_done(self) -> int:
        """How many leading items the dry run already computed."""
        return len(self.results)

    @property
    def n_computed(self) -> int:
        """How many items the dry run computed: the leading ones and those at :attr:`later` positions."""
        return len(self.results) + len(self.later)

    def precomputed(self) -> Sequence[Any] | dict[int, Any]:
        """The dry run's results by input position: the leading ones, then any at later positions."""
        if not self.later:
            return self.results
        return {**dict(enumerate(self.results)), **{position: result for position, _, result in self.later}}

    def rest(self) -> Iterator[Any]:
        """The items the dry run did not run, in order: one iterator, positioned after the sample."""
        return self._remaining

    def data(self) -> Iterable[Any]:
        """Every item, sampled ones included, in order.

        A list, range or other re-iterable input is returned as it is (nothing copied); an iterator
        or generator comes back as the sampled items chained in front of the untouched rest.
        """
        if self._reiterable:
            return self._source
        return itertools.chain(self.items, self._remaining)


def _is_iterator(data: Iterable[Any]) -> bool:
    return iter(data) is data


def input_length(data: Iterable[Any]) -> int | None:
    """``len(data)`` for a re-iterable input with a length; None for an iterator or no length."""
    if _is_iterator(data):
        return None
    try:
        return len(data)  # type: ignore[arg-type]
    except TypeError:
        return None


def _pickled(obj: Any) -> tuple[bytes | None, str | None]:
    """Pickle ``obj`` with pickle, else cloudpickle; return the bytes and the method that worked."""
    try:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL), "pickle"
    except Exception:
        pass
    try:
        return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL), "cloudpickle"
    except Exception:
        return None, None


def _worse(a: str | None, b: str | None) -> str | None:
    order = {"pickle": 0, "cloudpickle": 1}
    if a is None or b is None:
        return None
    return a if order[a] >= order[b] else b


def _code_objects(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)


def global_state_caveats(func: Callable[..., Any]) -> tuple[str, ...]:
    """Name the module globals ``func`` writes, or reads while they hold mutable containers.

    A process worker has its own copy of every module: what a worker writes to a global is lost to
    the caller, and under ``spawn``/``forkserver`` a worker re-imports the module, so changes the
    caller made after import are not seen.

    Args:
        func: the user's function (functions, ``functools.partial`` and bound methods are inspected).

    Returns:
        Human-readable caveats, empty when none apply.
    """
    target: Any = func
    while hasattr(target, "func") and not hasattr(target, "__code__"):  # functools.partial
        target = target.func
    target = getattr(target, "__func__", target)  # bound method
    code = getattr(target, "__code__", None)
    namespace = getattr(target, "__globals__", None)
    if not isinstance(code, types.CodeType) or not isinstance(namespace, dict):
        return ()
    written: set[str] = set()
    read: set[str] = set()
    for each in _code_objects(code):
        for instruction in dis.get_instructions(each):
            if instruction.opname in ("STORE_GLOBAL", "DELETE_GLOBAL"):
                written.add(str(instruction.argval))
            elif instruction.opname == "LOAD_GLOBAL":
                read.add(str(instruction.argval))
    mutable = sorted(
        name for name in read - written if isinstance(namespace.get(name), _MUTABLE_GLOBAL_TYPES)
    )
    caveats = []
    if written:
        caveats.append(
            f"{_name(func)} assigns module globals ({', '.join(sorted(written))}); in process workers "
            "those assignments stay in the worker and are lost to the caller"
        )
    if mutable:
        caveats.append(
            f"{_name(func)} reads mutable module globals ({', '.join(mutable)}); process workers see "
            "their own copies: changes made by workers are lost, and under spawn/forkserver changes "
            "the caller made after import are not seen"
        )
    return tuple(caveats)


def _name(func: Callable[..., Any]) -> str:
    return getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)


def blas_threads_loaded() -> int:
    """Largest thread count of a loaded BLAS/OpenMP library, 0 when none.

    Found by :func:`~amorsize._native.blas_controller` (a scan is reused until a library loads):
    not looked for when none is mapped, nor, where the maps cannot be read, without a module that
    loads one (:func:`~amorsize._native.blas_modules_loaded`). The maps also show a library that a
    module outside that list loaded (OpenMP in a gradient boosting library, say).
    """
    try:
        controller = blas_controller(blind=blas_modules_loaded())
        if controller is None:
            return 0
        return max((int(lib.num_threads or 0) for lib in controller.lib_controllers), default=0)
    except Exception:
        return 0


@dataclass
class _Measured:
    items: list[Any] = field(default_factory=list)
    results: list[Any] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)
    cpu_times: list[float] = field(default_factory=list)
    first_done_at: float = 0.0  # time.perf_counter() when the first item returned


def _call(func: Callable[[Any], Any], item: Any, index: int, measured: _Measured) -> Any:
    try:
        return func(item)
    except Exception as error:
        raise SamplingError(index, error) from error


def _serial_phase(
    func: Callable[[Any], Any],
    iterator: Iterator[Any],
    sample_size: int,
    total_items: int | None,
    clock: Callable[[], float],
    cpu_clock: Callable[[], float],
    head: _HeadStart | None = None,
    canary: GilCanary | None = None,
) -> _Measured:
    measured = _Measured()
    enough_at: float | None = None  # spent when the budget was met (the canary may want more)
    spent = 0.0
    index = 0
    n_fast = 0  # items under FAST_ITEM_SECONDS: the median is under it when they are more than half
    wall = math.inf
    for index, item in enumerate(iterator):
        if index == 0 and head is not None:
            head.arm()
            try:
                wall = _timed_call(func, item, index, measured, clock, cpu_clock)
            finally:
                launched = head.disarm()
            if launched:  # the rest ran meanwhile; the process clock counted its threads too
                measured.cpu_times[0] = min(head.first_cpu, measured.durations[0])
                measured.first_done_at = time.perf_counter()
                head.record(measured, iterator)
                return measured
        else:
            exact = wall >= RUN_QUEUE_ITEM_SECONDS  # judged by the item before
            wall = _timed_call(func, item, index, measured, clock, cpu_clock, exact=exact)
        spent += wall
        n_fast += wall < FAST_ITEM_SECONDS
        if index == 0:
            measured.first_done_at = time.perf_counter()
        waiting = _waiting(measured)
        if _enough(measured.durations, spent, sample_size, total_items, waiting):
            enough_at = spent if enough_at is None else enough_at
            fast = 2 * n_fast > index + 1  # many wake-ups' worth would be many items timed alone
            if fast or waiting or not _canary_wants_more(canary, measured, spent - enough_at, total_items):
                return measured
        elif index + 1 >= sample_size and 2 * n_fast > index + 1:
            break  # fast items (median under FAST_ITEM_SECONDS): the rest in batches
    else:
        return measured
    alone = len(measured.durations)
    # a batch is timed by the wall clock alone: a run-queue reading (~6 µs) inside the window would
    # add ~0.1 µs to each 70 ns item (a preempted batch is capped below instead)
    wall_clock = clock.wall if isinstance(clock, RunQueueClock) else clock
    while True:  # fast items, timed FAST_BATCH at a time
        batch = list(itertools.islice(iterator, FAST_BATCH))
        if not batch:
            break
        items = iter(batch)
        start_cpu = cpu_clock()
        start = wall_clock()
        try:
            results = [func(item) for item in items]  # as the serial runner calls a list's items
        except Exception as error:
            raise SamplingError(index + len(batch) - operator.length_hint(items), error) from error
        wall = wall_clock() - start
        cpu = min(max(0.0, cpu_clock() - start_cpu), wall)  # too short for the CPU clock to tell more
        index += len(batch)
        measured.items.extend(batch)
        measured.results.extend(results)
        measured.durations.extend([wall / len(batch)] * len(batch))
        measured.cpu_times.extend([cpu / len(batch)] * len(batch))
        spent += wall
        if _enough(measured.durations, spent, sample_size, total_items):
            break
    # The items timed alone mostly timed the clock, and the first batch runs cold (1M × x*x: ~240 ns
    # per item in it, ~70 ns in the next ones, ~66 ns in the run): they get the later batches' mean.
    warm = alone + FAST_BATCH if len(measured.durations) > alone + FAST_BATCH else alone
    if len(measured.durations) > warm:
        # A batch preempted by another process (5 ms on 64 items) would read ~80 µs per 70 ns item
        # and send 200k trivial items to processes: no batch counts more than BATCH_OUTLIER × the
        # quickest one (waiting for a core only ever adds time).
        cap = BATCH_OUTLIER * min(measured.durations[warm:])
        for position in range(warm, len(measured.durations)):
            if measured.durations[position] > cap:
                measured.cpu_times[position] *= cap / measured.durations[position]
                measured.durations[position] = cap
        mean = statistics.fmean(measured.durations[warm:])
        cpu_mean = statistics.fmean(measured.cpu_times[warm:])
        measured.durations[:warm] = [mean] * warm
        measured.cpu_times[:warm] = [cpu_mean] * warm
    return measured


def _children_cpu() -> float | None:
    """CPU seconds used so far by this process's waited-for child processes; None where unknown."""
    try:
        import resource
    except ImportError:  # Windows: unknown, so waiting work is always probed there
        return None
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _child_pids() -> set[int] | None:
    """This process's child processes (``/proc/self/task/*/children``); None where unknown."""
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return None
    pids: set[int] = set()
    readable = False
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/children") as file:
                pids.update(int(pid) for pid in file.read().split())
            readable = True
        except (OSError, ValueError):  # the thread ended meanwhile (or the kernel lacks the file)
            continue
    return pids if readable else None


class _ThreadTimings:
    """Items run on threads, by position: their results, wall and CPU seconds, and failures.

    Shared by the thread probe (:func:`_on_threads`) and the head start (:class:`_HeadStart`).
    """

    def __init__(self, n_items: int, clock: Callable[[], float]) -> None:
        self.results: list[Any] = [None] * n_items
        self.walls = [0.0] * n_items
        self.cpus = [0.0] * n_items
        self.errors: list[tuple[int, BaseException]] = []
        self._clock = clock

    def run(self, func: Callable[[Any], Any], item: Any, position: int) -> float | None:
        """Call ``func(item)`` in this thread, timed; its end on ``clock``, or None when it raised.

        A failure is kept (:meth:`raise_first`). Off the main thread that includes ``SystemExit``,
        which would otherwise end the thread only and leave a ``None`` result.
        """
        started_cpu = time.thread_time()
        started = self._clock()
        try:
            self.results[position] = func(item)
        except Exception as error:
            self.errors.append((position, error))
            return None
        except BaseException as error:
            if threading.current_thread() is threading.main_thread():
                raise  # Ctrl-C, or the program exiting
            self.errors.append((position, error))
            return None
        ended = self._clock()
        self.walls[position] = ended - started
        self.cpus[position] = time.thread_time() - started_cpu
        return ended

    def raise_first(self, first_index: int) -> None:
        """Raise for the first failed item by position, if any.

        Raises:
            SamplingError: naming ``first_index`` + its position.
        """
        if self.errors:
            position, error = min(self.errors, key=lambda pair: pair[0])
            raise SamplingError(first_index + position, error) from error


class _HeadStart:
    """Starts the rest of a short input, a thread per item, while its first item waits.

    Used around the first item of :func:`sample` with ``head_start`` (see :data:`HEAD_START_AFTER`):
    :meth:`arm` right before the call, in the calling thread; :meth:`disarm` right after it, which
    joins every thread started. The rest's items are a slice of the list, tuple or range, taken
    when they start, so the input's iterator is never touched from another thread.
    """

    def __init__(
        self,
        func: Callable[[Any], Any],
        data: list[Any] | tuple[Any, ...] | range,
        clock: Callable[[], float],
    ) -> None:
        self._func = func
        self._data = data
        self.items: list[Any] = []  # the rest, taken (by a slice) when it starts
        self._clock = clock
        self._lock = threading.Lock()
        self._armed = threading.Event()  # the first item's start is noted
        self._done = threading.Event()  # the first item returned
        self._caller_clock = time.pthread_getcpuclockid(threading.get_ident())
        self._caller_cpu = 0.0
        self._started_at = 0.0
        self._children: set[int] | None = None
        self._watcher: threading.Thread | None = None
        self._threads: list[threading.Thread] = []
        self.launched = False
        self._launched_at = 0.0
        self._ended_at = 0.0  # the latest end of an item started here
        self.first_cpu = 0.0  # the calling thread's CPU seconds over the first item
        self.timings = _ThreadTimings(0, clock)

    def arm(self) -> None:
        """Start watching the first item (call right before it, in the thread that runs it)."""
        self._children = _child_pids()
        self._watcher = threading.Thread(target=self._watch, name="amorsize-head-watch", daemon=True)
        self._watcher.start()
        # after the watcher's start, whose ~0.1–0.2 ms of CPU here is not the item's
        self._caller_cpu = time.clock_gettime(self._caller_clock)
        self._started_at = time.perf_counter()
        self._armed.set()

    def disarm(self) -> bool:
        """Stop watching (right after the first item); wait for every item started. True if any was."""
        self.first_cpu = time.clock_gettime(self._caller_clock) - self._caller_cpu
        with self._lock:
            self._done.set()
        self._armed.set()
        if self._watcher is not None:
            self._watcher.join()
        for thread in self._threads:
            thread.join()
        return self.launched

    def _watch(self) -> None:
        self._armed.wait()
        if self._done.wait(HEAD_START_AFTER) or self._children is None:
            return
        elapsed = time.perf_counter() - self._started_at
        if time.clock_gettime(self._caller_clock) - self._caller_cpu >= HEAD_START_CPU_SHARE * elapsed:
            return  # the first item computes
        children = _child_pids()
        if children is None or children - self._children:
            return  # it started a process, which may compute for it while it waits
        from amorsize.measure.machine import memory_info

        if (len(self._data) - 1) * HEAD_START_ITEM_MEMORY > memory_info()[0]:
            return  # what they will allocate is not known: not that many at once
        with self._lock:
            if self._done.is_set():
                return
            self.items = list(self._data[1:])
            self.timings = _ThreadTimings(len(self.items), self._clock)
            self.launched = True
            self._launched_at = self._clock()
            for position in range(len(self.items)):
                thread = threading.Thread(
                    target=self._run, args=(position,), name="amorsize-head-start", daemon=True
                )
                self._threads.append(thread)
                thread.start()

    def _run(self, position: int) -> None:
        ended = self.timings.run(self._func, self.items[position], position)
        if ended is not None:
            self._ended_at = max(self._ended_at, ended)  # a race may keep an earlier end: ~µs apart

    def speedup(self, reference: float) -> float | None:
        """How many times faster than one by one (items of ``reference`` seconds) the items ran."""
        wall = self._ended_at - self._launched_at
        return len(self.items) * reference / wall if self.launched and wall > 0 and reference > 0 else None

    def record(self, measured: _Measured, iterator: Iterator[Any]) -> None:
        """Append the items run to ``measured`` in order, and step ``iterator`` past them.

        Raises:
            SamplingError: an item raised (the first by position).
        """
        for _ in self.items:  # the same items the sequence gave by position
            next(iterator, None)
        self.timings.raise_first(1)
        measured.items.extend(self.items)
        measured.results.extend(self.timings.results)
        measured.durations.extend(self.timings.walls)
        measured.cpu_times.extend(self.timings.cpus)


def _quickest_threaded_run(n_items: float, item_seconds: float) -> float:
    """The least time threads can run ``n_items`` waiting items of ``item_seconds`` in (seconds).

    ``n·d/T + T·s`` on ``T`` threads, at :data:`THREAD_START_SECONDS` per start, is least at
    ``T = √(n·d/s)``: ``2·√(n·d·s)``; never less than one item.
    """
    return max(item_seconds, 2.0 * math.sqrt(n_items * item_seconds * THREAD_START_SECONDS))


def _overlap_evident(
    measured: _Measured, total: int | None, gil_held: float | None, child_cpu: float | None
) -> bool:
    """Whether waiting items may skip the wide probe (see :data:`WAIT_PROBE_RUN_SHARE`).

    Args:
        measured: the serial phase (waiting items, by :func:`_waiting`).
        total: the input's length (None: a stream, whose run may be long — probed).
        gil_held: the canary's held share over the serial phase (None: not read).
        child_cpu: CPU seconds child processes used during the serial phase (None: unknown).
    """
    wall = math.fsum(measured.durations)
    if total is None or gil_held is None or gil_held >= WAIT_GIL_HELD or child_cpu is None:
        return False
    if child_cpu >= WAIT_CHILD_CPU_SHARE * wall:
        return False
    mean = wall / len(measured.durations)
    remaining = max(0, total - len(measured.durations))
    probe = max(mean, WAIT_PROBE_SECONDS) + WAIT_PROBE_THREADS * THREAD_START_SECONDS
    return probe > WAIT_PROBE_RUN_SHARE * _quickest_threaded_run(remaining, mean)


def _waiting(measured: _Measured) -> bool:
    """Whether the items measured so far mostly wait (long enough for the CPU clock to tell)."""
    wall = sum(measured.durations)
    if not measured.durations or wall < WAIT_MIN_ITEM_SECONDS * len(measured.durations):
        return False
    return sum(measured.cpu_times) < IO_BOUND_CPU_RATIO * wall


#: A first call this many times slower than the slowest of the next ones (at least
#: :data:`WARMUP_AFTER` of them) did one-time work: imports, caches, a BLAS thread pool starting.
#: NumPy imported inside a matmul item: the first call 64 ms, the next five 0.8–1.1 ms, and 300
#: items were predicted at 3.4 s serially instead of ~0.26 s.
WARMUP_FACTOR = 4.0
WARMUP_AFTER = 4
#: Shorter first calls are not judged (the clock and the first batch of fast items handle those).
WARMUP_MIN_SECONDS = 1e-3


def _looks_like_warmup(durations: Sequence[float]) -> bool:
    """Whether the first call was :data:`WARMUP_FACTOR` × slower than every later one so far."""
    return (
        len(durations) >= 2
        and durations[0] >= WARMUP_MIN_SECONDS
        and durations[0] > WARMUP_FACTOR * max(durations[1:])
    )


def _discount_warmup(measured: _Measured) -> float | None:
    """Give a first call that did one-time work the mean of the others; return its duration.

    Returns:
        The first call's measured seconds when it was discounted (see :data:`WARMUP_FACTOR`), else None.
    """
    durations = measured.durations
    if len(durations) < 1 + WARMUP_AFTER or not _looks_like_warmup(durations):
        return None
    first = durations[0]
    rest = len(durations) - 1
    durations[0] = math.fsum(durations[1:]) / rest
    measured.cpu_times[0] = math.fsum(measured.cpu_times[1:]) / rest
    return first


def _fmt_ms(seconds: float) -> str:
    return f"{seconds * 1e3:.0f} ms" if seconds >= 0.01 else f"{seconds * 1e3:.1f} ms"


def _timed_call(
    func: Callable[[Any], Any],
    item: Any,
    index: int,
    measured: _Measured,
    clock: Callable[[], float],
    cpu_clock: Callable[[], float],
    *,
    exact: bool = True,
) -> float:
    """Call ``func`` on one item, timed alone; record it in ``measured``; return its wall time.

    With a :class:`RunQueueClock` and ``exact``, the wall time leaves out the time this thread
    waited for a CPU; its two readings (~6 µs each) are taken outside both timed windows.
    """
    queue: RunQueueClock | None = None
    wall_clock = clock
    if isinstance(clock, RunQueueClock):
        queue, wall_clock = (clock if exact and clock.corrects else None), clock.wall
    queued = queue.waited() if queue is not None else 0.0
    start_cpu = cpu_clock()
    start = wall_clock()
    result = _call(func, item, index, measured)
    wall = wall_clock() - start
    cpu = max(0.0, cpu_clock() - start_cpu)  # a clock corrected for the canary may step back a little
    if queue is not None:  # a wait just outside the timed window may be read too: never below the CPU time
        wall -= min(queue.waited() - queued, max(0.0, wall - cpu))
    if wall < CPU_CLOCK_FLOOR:
        cpu = min(cpu, wall)  # the CPU clock's own cost dominates such short calls
    measured.items.append(item)
    measured.results.append(result)
    measured.durations.append(wall)
    measured.cpu_times.append(cpu)
    return wall


#: Items timed alone leave out the time the thread waited for a CPU (:mod:`amorsize.measure.runqueue`)
#: when the item before took at least this long (the first and the later points: always). The two
#: readings cost ~12 µs an item: 267 items of 10 µs took 1.5 ms more to sample (3.7 → 5.3 ms).
RUN_QUEUE_ITEM_SECONDS = 200e-6


#: A long sequence is also sampled at this many later positions, each in the middle of an equal
#: stretch of what the first items leave: an input sorted by size looks cheap from its first items.
#: 1,800 × 0.2 ms then 200 × 10 ms (``long-tail-end`` in ``benchmarks/suite.py``): a run of 1.3 s
#: was predicted at 0.2 s from the first items alone.
SPREAD_POINTS = 8
#: … only when those items cost at most this fraction of the estimated serial time (their results
#: are kept, but they run serially, before the workers start) …
SPREAD_FRACTION = 0.005
#: … and they differ from the first items when their mean is more than this many standard errors
#: from the first items' mean (their spread, at least :data:`SPREAD_NOISE` of the mean — one 50 µs
#: item timed alone reads ±10 % —, over √points). Then each stands for its stretch of the input;
#: otherwise every sampled item counts once (the input looks shuffled: a stratified estimate from
#: 8 points would only be noisier).
SPREAD_SIGNIFICANCE = 3.0
SPREAD_NOISE = 0.25
#: When they differ, two neighbouring sampled positions whose durations are this many times apart
#: mark a step in the input (long items clustered somewhere) …
STEP_RATIO = 4.0
#: … which is located by timing the item in the middle of the gap, then of the half it lies in, this
#: many times (within another :data:`SPREAD_FRACTION` of the estimated serial time). Each sampled
#: position stands for the input positions nearest to it. ``long-tail-end`` (1,800 × 0.2 ms, then
#: 200 × 10 ms) was predicted 27–46 % slow: its last point stood for the last 12.5 % of the input.
STEP_BISECTIONS = 3


@dataclass
class _Later(_Measured):
    positions: list[int] = field(default_factory=list)  # of the items, in input order


def _sample_later(
    func: Callable[[Any], Any],
    data: Iterable[Any],
    total: int | None,
    n_done: int,
    first: Sequence[float],
    clock: Callable[[], float],
    cpu_clock: Callable[[], float],
) -> _Later:
    """Run the items at :data:`SPREAD_POINTS` later positions of a sequence, each timed alone.

    Nothing for inputs that are not sequences (iterators are read in order only), for fast items
    (timed alone they would time the clock), or when the points would cost more than
    :data:`SPREAD_FRACTION` of the estimated serial time. Stops after :data:`MAX_SAMPLE_SECONDS`.
    When the points differ from ``first`` (the leading items' durations, ``n_done`` items ran),
    the largest step between neighbours is located (:data:`STEP_BISECTIONS`). The result is in
    input order.

    Raises:
        SamplingError: ``func`` raised on one of them (its position is the index).
    """
    mean = statistics.fmean(first) if first else 0.0
    later = _Later()
    if not isinstance(data, Sequence) or isinstance(data, (str, bytes, bytearray)) or total is None:
        return later
    rest = total - n_done
    if mean < FAST_ITEM_SECONDS or rest * SPREAD_FRACTION < SPREAD_POINTS:
        return later
    spent = 0.0
    for point in range(SPREAD_POINTS):
        position = n_done + int((point + 0.5) * rest / SPREAD_POINTS)
        try:
            item = data[position]
        except Exception:  # a sequence that cannot be indexed after all: keep what ran
            break
        spent += _timed_call(func, item, position, later, clock, cpu_clock)
        later.positions.append(position)
        if spent >= MAX_SAMPLE_SECONDS:
            return later
    if len(later.positions) == SPREAD_POINTS and _later_differs(first, later.durations):
        budget = SPREAD_FRACTION * rest * statistics.fmean(later.durations)
        _locate_step(
            func, data, later, (n_done - 1, mean), min(budget, MAX_SAMPLE_SECONDS - spent), clock, cpu_clock
        )
    return later


def _locate_step(
    func: Callable[[Any], Any],
    data: Sequence[Any],
    later: _Later,
    leading: tuple[int, float],
    budget: float,
    clock: Callable[[], float],
    cpu_clock: Callable[[], float],
) -> None:
    """Bisect the gap with the largest duration ratio between neighbouring sampled positions.

    ``leading``: (position, duration) standing for the leading items, the gap before the first
    later point included. The items timed here join ``later``, which ends sorted by position.
    """
    points = [leading, *zip(later.positions, later.durations, strict=True)]

    def ratio(a: float, b: float) -> float:
        return max(a, b) / min(a, b) if min(a, b) > 0 else 0.0

    i = max(range(len(points) - 1), key=lambda k: ratio(points[k][1], points[k + 1][1]))
    (low, low_d), (high, high_d) = points[i], points[i + 1]
    if ratio(low_d, high_d) >= STEP_RATIO:
        spent = 0.0
        for _ in range(STEP_BISECTIONS):
            middle = (low + high) // 2
            if middle <= low or spent >= budget:
                break
            wall = _timed_call(func, data[middle], middle, later, clock, cpu_clock)
            spent += wall
            later.positions.append(middle)
            # like the low side or the high side? (durations compared by ratio)
            if ratio(wall, low_d) <= ratio(wall, high_d) and wall > 0:
                low, low_d = middle, wall
            else:
                high, high_d = middle, wall
    order = sorted(range(len(later.positions)), key=later.positions.__getitem__)
    for name in ("positions", "items", "results", "durations", "cpu_times"):
        values = getattr(later, name)
        values[:] = [values[k] for k in order]


def _later_differs(first: Sequence[float], later: Sequence[float]) -> bool:
    """Whether the later points' mean differs from the leading items' (see :data:`SPREAD_SIGNIFICANCE`)."""
    if not later or not first:
        return False
    mean_first = math.fsum(first) / len(first)
    spread = max(pstdev(first) if len(first) >= 2 else 0.0, SPREAD_NOISE * mean_first)
    mean_later = math.fsum(later) / len(later)
    return abs(mean_later - mean_first) > SPREAD_SIGNIFICANCE * spread / math.sqrt(len(later))


def _spread_weights(
    first: Sequence[float], later: Sequence[float], positions: Sequence[int], n_first: int, total: int
) -> tuple[float, ...]:
    """Weights for ``first + later`` durations (see :data:`SPREAD_SIGNIFICANCE`); () when equal.

    ``first`` are the timed leading items, standing for the ``n_first`` leading positions (the
    probe's items are not timed one by one); each of ``later`` (at ``positions``, sorted) stands
    for the later input positions nearer to it than to any other sampled one: an equal share of
    the rest for the evenly spread points alone.
    """
    if not _later_differs(first, later):
        return ()
    bounds = [float(n_first)]
    bounds += [(a + b) / 2 for a, b in itertools.pairwise(positions)]
    bounds.append(float(total))
    return (n_first / len(first),) * len(first) + tuple(b - a for a, b in itertools.pairwise(bounds))


#: Serial items the GIL canary may add after the budget is met, to reach its :data:`MIN_SAMPLES`
#: wake-ups (a share of the estimated run, and at most this many seconds). Without a reading, work
#: costly to ship is probed on two threads instead: large-output (200 × 2 ms of pure Python, 1 MB
#: results) sampled 4–5 items, the canary woke 3–11 times (None about one dry run in three), and
#: the probe, noisy on this machine, planned threads × 2 about once in fifteen (1.16–1.2× serial).
CANARY_EXTRA_SECONDS = PROBE_TARGET_SECONDS


def _canary_wants_more(
    canary: GilCanary | None, measured: _Measured, extra: float, total_items: int | None
) -> bool:
    """Whether to time a few more serial items so that the canary can read the GIL (see above).

    Not for waiting items (the caller checks): the canary wakes often enough beside them.

    Args:
        canary: the dry run's canary (None: none runs).
        measured: the serial phase so far.
        extra: seconds of items run since the budget was met.
        total_items: the input's length (None: a stream, left as it is).
    """
    n = len(measured.durations)
    if canary is None or total_items is None or n >= total_items or n >= MAX_SAMPLES:
        return False
    wake_ups = canary.wake_ups()
    if wake_ups is None or wake_ups > MIN_CANARY_SAMPLES:  # the last wake-up does not count
        return False
    mean = math.fsum(measured.durations) / n
    allowed = min(CANARY_EXTRA_SECONDS, PROBE_FRACTION * mean * total_items / 3)
    return extra < allowed


def _enough(
    durations: Sequence[float],
    spent: float,
    sample_size: int,
    total_items: int | None,
    waiting: bool = False,
) -> bool:
    """Decide whether the serial phase has measured enough (see the module docstring).

    ``waiting``: the items mostly wait, so the run will overlap them on many threads; the budget is
    then a share of that run (:data:`WAIT_OVERLAP`), and the wide probe measures more items.
    """
    n = len(durations)
    if n >= MAX_SAMPLES or (total_items is not None and n >= total_items):
        return True
    if _looks_like_warmup(durations):  # budget by the calls after it (see _discount_warmup)
        spent -= durations[0]
        durations = durations[1:]
        n -= 1
    mean = spent / n
    estimated_total = mean * total_items if total_items is not None else math.inf
    budget = min(MAX_SAMPLE_SECONDS, max(MIN_SAMPLE_SECONDS, SAMPLE_FRACTION * estimated_total))
    if waiting:
        budget = budget / WAIT_OVERLAP
        if total_items is not None:  # … nor more than its share of the quickest run threads can make
            budget = min(budget, SAMPLE_FRACTION * _quickest_threaded_run(total_items, mean))
        budget = max(MIN_SAMPLE_SECONDS, budget)
    if spent >= budget:
        return True
    if n < sample_size:
        return False
    if spent < MIN_SAMPLE_SECONDS:
        return False  # fast items: keep going until timer noise is negligible
    if n >= 4 * sample_size:
        return True
    return not (n >= 2 and mean > 0 and pstdev(durations) / mean > 0.5)  # varied: more, up to 4 × sample_size


#: The probe is skipped for items whose CPU time is at least this share of their wall time …
PROBE_SKIP_CPU_SHARE = 0.8
#: … and whose shipping to a process (pickling both ways plus the bytes at a slow 500 MB/s pipe)
#: costs under this fraction of the item: processes then run them as well as threads could, and
#: the probe (~3 × 30 ms of items at serial speed) would only slow the run — ~45 ms of a 1 s
#: parallel run of 1 ms items in ``benchmarks/bench_execute.py``.
PROBE_SKIP_SHIP_FRACTION = 0.05
_SLOW_PIPE_BYTES_PER_SECOND = 500e6


#: Sampled items and results are pickled as one list each, as the runner ships them in chunks:
#: one pickle per item read a float's round trip at ~2 µs, a chunk's at ~0.1 µs per item, and a
#: 10 µs item's transfer was overstated ~20×. Their sizes are counted as they are pickled, nothing
#: kept (:func:`_pickled_size`); the round trip that times pickling runs on the first items up to
#: this many bytes, and its time scales to all of them by size: 15 sampled items of 1 MB took 11 ms
#: to pickle and unpickle whole, 4–11 ms of a 0.1 s job's analysis.
TIMED_PICKLE_BYTES = 2**20


class _ByteCount:
    """A write-only file that counts the bytes a pickler writes to it and keeps none."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0

    def write(self, data: Any) -> int:
        size = memoryview(data).nbytes
        self.n += size
        return size


def _pickled_size(obj: Any) -> int:
    """The length of ``pickle.dumps(obj, protocol=5)``, without building it.

    Large ``bytes`` payloads go straight to the sink (1 MB: 0.03 ms, against 1.5 ms for ``dumps``).

    Raises:
        Exception: whatever pickling ``obj`` raises.
    """
    sink = _ByteCount()
    pickle.Pickler(sink, protocol=5).dump(obj)
    return sink.n


def _list_pickles(
    items: Sequence[Any], results: Sequence[Any], clock: Callable[[], float]
) -> tuple[int, int, float] | None:
    """Pickle ``items`` and ``results`` as two lists (plain pickle), as the runner ships chunks.

    Returns:
        The two pickles' sizes in bytes and the seconds per item to pickle and unpickle both (timed
        on the first items up to :data:`TIMED_PICKLE_BYTES`, scaled by size); None when they do
        not pickle that way.
    """
    if not items:
        return None
    try:
        items_size = _pickled_size(list(items))
        results_size = _pickled_size(list(results))
        total = items_size + results_size
        k = max(1, min(len(items), int(len(items) * TIMED_PICKLE_BYTES / max(1, total))))
        start = clock()
        items_blob = pickle.dumps(list(items[:k]), protocol=5)
        results_blob = pickle.dumps(list(results[:k]), protocol=5)
        pickle.loads(items_blob)
        pickle.loads(results_blob)
        seconds = clock() - start
    except Exception:
        return None
    timed = len(items_blob) + len(results_blob)
    return items_size, results_size, seconds * (total / max(1, timed)) / len(items)


def _item_pickles(
    measured: _Measured, n_serial: int, method: str | None, clock: Callable[[], float], warnings: list[str]
) -> tuple[list[int], list[int], list[float], str | None]:
    """Pickle each sampled item and result alone: sizes, round-trip seconds, the method that worked.

    ``method`` (the function's) is made worse by any item or result that needs cloudpickle or cannot
    be pickled; each of those adds a warning to ``warnings``.
    """
    input_bytes: list[int] = []
    output_bytes: list[int] = []
    serialize: list[float] = []
    for position in range(n_serial):
        start = clock()
        item_bytes, item_method = _pickled(measured.items[position])
        result_bytes, result_method = _pickled(measured.results[position])
        if item_bytes is not None:
            pickle.loads(item_bytes)
        if result_bytes is not None:
            pickle.loads(result_bytes)
        serialize.append(clock() - start)
        input_bytes.append(len(item_bytes or b""))
        output_bytes.append(len(result_bytes or b""))
        if method is not None and (item_method is None or result_method is None):
            what, value = (
                ("an item", measured.items[position])
                if item_method is None
                else ("a result", measured.results[position])
            )
            warnings.append(
                f"{what} of type {type(value).__name__} cannot be pickled, "
                "so process workers were not considered"
            )
        method = _worse(method, _worse(item_method, result_method))
    return input_bytes, output_bytes, serialize, method


def _probe_informative(
    func_method: str | None,
    measured: _Measured,
    mean: float,
    blas_cap: int | None,
    list_pickles: Callable[[int], tuple[int, int, float] | None],
) -> bool:
    """Whether the two-thread probe could change the plan (see :data:`PROBE_SKIP_CPU_SHARE`).

    ``func_method``: how the function pickles (:func:`_pickled`); ``list_pickles(n)``:
    :func:`_list_pickles` of the first ``n`` items and results, as :func:`sample` keeps it.
    """
    if free_threaded() or mean <= 0 or func_method is None:
        return True
    if sum(measured.cpu_times) < PROBE_SKIP_CPU_SHARE * sum(measured.durations):
        return True  # waiting work: how far it overlaps decides how many threads
    if blas_cap is not None:
        return True  # BLAS items: how fast they run with their threads capped decides the plan
    batch = list_pickles(len(measured.durations))
    if batch is not None:  # all pickle plainly, timed as chunks: the first pair's size is counted
        per_item = batch[2]
        size = _pickled_size(measured.items[0]) + _pickled_size(measured.results[0])
    else:  # one item, or one that needs cloudpickle: the first pair pickled alone
        started = time.perf_counter()
        item_bytes, _ = _pickled(measured.items[0])
        result_bytes, _ = _pickled(measured.results[0])
        if item_bytes is None or result_bytes is None:
            return True  # cannot go to processes: threads or serial, the probe decides
        pickle.loads(item_bytes)
        pickle.loads(result_bytes)
        per_item = time.perf_counter() - started
        size = len(item_bytes) + len(result_bytes)
    ship = per_item + size / _SLOW_PIPE_BYTES_PER_SECOND
    return ship >= PROBE_SKIP_SHIP_FRACTION * mean


#: Items whose CPU time exceeds their wall time by this factor, with a BLAS/OpenMP library running
#: more than one thread, are multi-threaded through it: the probe then runs them capped.
BLAS_CPU_RATIO = 1.2


def _blas_cap(loaded_blas_threads: int) -> int | None:
    """The BLAS thread limit the probe's two threads run under, or None when the items are not BLAS-bound.

    Two threads get ``usable cores // 2`` BLAS threads each, as the runner gives a run's workers.
    ``loaded_blas_threads``: :func:`blas_threads_loaded`, read once per dry run (0.4–8 ms with NumPy)
    and only for items that used :data:`BLAS_CPU_RATIO` × their wall time in CPU (else 0).
    """
    if loaded_blas_threads <= 1:
        return None
    from amorsize.measure.machine import usable_cores

    return max(1, usable_cores() // 2)


def _on_threads(
    func: Callable[[Any], Any], items: list[Any], n_threads: int, first_index: int, clock: Callable[[], float]
) -> tuple[list[Any], list[float], list[float], float]:
    """Run ``items`` on ``n_threads`` threads at once (item k on thread k mod n), each item timed.

    One thread is this one: the items then run one by one here.

    Returns:
        The results, each item's wall and CPU (thread) seconds, and the wall time of the whole run
        (its clock starts when every thread is ready).

    Raises:
        SamplingError: an item raised (the first by position; ``first_index`` is ``items[0]``'s).
    """
    shares = [range(t, len(items), n_threads) for t in range(n_threads)]
    timings = _ThreadTimings(len(items), clock)
    # the workers and this thread: the clock starts with the work
    barrier = threading.Barrier(n_threads + 1 if n_threads > 1 else 1)

    def work(positions: range) -> None:
        barrier.wait()
        for position in positions:
            if timings.run(func, items[position], position) is None:
                return

    if n_threads == 1:
        start = clock()
        work(shares[0])
    else:
        threads = [threading.Thread(target=work, args=(share,), daemon=True) for share in shares]
        for thread in threads:
            thread.start()
        barrier.wait()
        start = clock()
        for thread in threads:
            thread.join()
    wall = clock() - start
    timings.raise_first(first_index)
    return timings.results, timings.walls, timings.cpus, wall


def _capped_probe(
    func: Callable[[Any], Any],
    iterator: Iterator[Any],
    measured: _Measured,
    clock: Callable[[], float],
    window: float,
    blas_cap: int,
) -> tuple[float, int, float | None, int] | None:
    """BLAS-bound items timed under ``blas_cap``, on two threads as a run's workers get them when possible.

    Right after the serial phase's uncapped calls OpenBLAS keeps a helper thread spinning ~100 ms
    (104–108 ms of CPU measured): two capped threads then read 2.0–2.3 ms per 250² matmul where
    0.3 s later they read 1.0–1.1 ms. So the helper is stopped first
    (:func:`~amorsize._native.limited_quietly`, which stops it again as the cap is lifted, so that
    it does not spin through the planning and the run's start), and the items run on two threads;
    where it cannot be stopped (another thread may be calling BLAS) they run one by one in this
    thread, which reads
    1.2–1.6 ms either way but is pessimistic for the run (two threads did 300 such items in
    127–129 ms: 0.85 ms per item and thread). The items run for about ``window`` seconds (C code
    does not warm up like the interpreter: the serial phase stays the uncapped reference).

    Returns:
        ``(two-thread speedup if nothing else is shared, 2, capped seconds per item, blas_cap)``, or
        None when no item was left.
    """
    from threadpoolctl import ThreadpoolController

    mean = statistics.fmean(measured.durations)
    controller = blas_controller() or ThreadpoolController()
    with limited_quietly(controller, blas_cap) as quiet:
        threads = 2 if quiet else 1
        per_thread = max(1, min(PROBE_MAX_ITEMS_PER_THREAD, round(window / max(mean, 1e-9))))
        items = list(itertools.islice(iterator, threads * per_thread))
        if not items:
            return None
        results, walls, _, _ = _on_threads(func, items, threads, len(measured.items), clock)
    measured.items.extend(items)
    measured.results.extend(results)
    # each thread's first item pays for the thread's first BLAS call (2.3–4.6 ms where the next
    # ones took ~1 ms): left out when each thread ran a few
    capped = statistics.fmean(walls[threads:] if len(walls) >= 3 * threads else walls)
    if capped <= 0:
        return None
    return 2.0 * mean / capped, 2, capped, blas_cap


def _thread_probe(
    func: Callable[[Any], Any],
    iterator: Iterator[Any],
    measured: _Measured,
    clock: Callable[[], float],
    cpu_clock: Callable[[], float],
    budget: float = PROBE_TARGET_SECONDS,
    *,
    max_threads: int | None = None,
    blas_cap: int | None = None,
) -> tuple[float, int, float | None, int] | None:
    """Time items on several threads at once against their serial time; return (speedup, threads).

    Computing work: a few items serially, then twice as many on two threads. The serial reference
    is taken right before the concurrent run (not from the first sampled items) because the first
    calls of a function run slower while the interpreter specialises them: 2 early items of
    pure-Python work read 1.4–1.55× "speedup" against a 2-thread run here.

    Waiting work (:func:`_waiting`): the serial phase is the reference (waiting does not warm up),
    and up to :data:`WAIT_PROBE_THREADS` threads run about :data:`WAIT_PROBE_SECONDS` of items each;
    when they overlap well their per-item times join the measured samples.

    BLAS-bound work (``blas_cap`` from :func:`_blas_cap`, None for waiting work): items run on two
    threads (or one by one) with BLAS/OpenMP capped, as a run's workers get them
    (:func:`_capped_probe`); the reference stays uncapped (as a serial run), and their time per
    item is the capped duration.

    Every item run is appended to ``measured`` (the serial ones as timed samples).

    Returns:
        ``(speedup, threads, capped seconds per item or None, the BLAS cap or 0)``, or None when
        there were too few items to probe.
    """
    mean = statistics.fmean(measured.durations)
    waiting = _waiting(measured)
    reference: list[float] = []
    if waiting:
        n_threads = (
            WAIT_PROBE_THREADS if max_threads is None else max(2, min(WAIT_PROBE_THREADS, max_threads))
        )
        per_thread = max(1, min(PROBE_MAX_ITEMS_PER_THREAD, round(WAIT_PROBE_SECONDS / max(mean, 1e-9))))
        reference = list(measured.durations)
    elif blas_cap is not None:  # no serial reference to take here: all 3 × budget goes to capped items
        return _capped_probe(func, iterator, measured, clock, min(PROBE_TARGET_SECONDS, 3 * budget), blas_cap)
    else:
        n_threads = 2
        per_thread = max(1, min(PROBE_MAX_ITEMS_PER_THREAD, round(budget / max(mean, 1e-9))))
        for item in itertools.islice(iterator, per_thread):
            _timed_call(func, item, len(measured.items), measured, clock, cpu_clock)
            reference.append(measured.durations[-1])
    items = list(itertools.islice(iterator, n_threads * per_thread))
    first_index = len(measured.items)
    n_threads = min(n_threads, len(items))
    if n_threads < 2 or not reference:
        for offset, item in enumerate(items):
            measured.items.append(item)
            measured.results.append(_call(func, item, first_index + offset, measured))
        return None
    results, walls, cpus, wall = _on_threads(func, items, n_threads, first_index, clock)
    if wall <= 0:
        return None
    speedup = len(items) * statistics.fmean(reference) / wall
    measured.items.extend(items)
    measured.results.extend(results)
    if waiting and speedup >= WAIT_PROBE_OVERLAP * n_threads:
        measured.durations.extend(walls)
        for cpu, item_wall in zip(cpus, walls, strict=True):
            measured.cpu_times.append(min(cpu, item_wall) if item_wall < CPU_CLOCK_FLOOR else cpu)
    return speedup, n_threads, None, 0


def sample(
    func: Callable[[Any], Any],
    data: Iterable[Any],
    *,
    sample_size: int = 5,
    probe_threads: bool | None = None,
    clock: Callable[[], float] = time.perf_counter,
    cpu_clock: Callable[[], float] = time.process_time,
    max_probe_threads: int | None = None,
    head_start: bool = False,
) -> Sample:
    """Run ``func`` on the first items of ``data`` and measure it.

    Args:
        func: a one-argument callable.
        data: any iterable; iterators and generators are consumed only as far as sampled.
        sample_size: items to sample serially when they are cheap (more when fast or varied,
            fewer when heavy; see the module docstring).
        probe_threads: measure how the items run on threads — the GIL canary during the serial
            phase, then, where that is not enough (waiting or BLAS work, or too short a phase), a
            thread probe on further items when affordable: True always, False never, None
            (default) the canary always and the probe only when its answer can change the plan —
            not for CPU-bound items that are cheap to ship, where processes do at least as well as
            threads could (see :func:`_probe_informative`).
        clock: wall clock (seconds); cpu_clock: process CPU clock (seconds). Tests pass fakes.
        max_probe_threads: most threads the probe runs at once (None: 2 for computing work,
            :data:`WAIT_PROBE_THREADS` for waiting work); ≥ 2.
        head_start: the caller keeps every result (``execute``, ``imap``) and calls ``func`` from
            any number of threads: a list, tuple or range of at most :data:`HEAD_START_ITEMS` + 1
            items whose first item waits then runs whole, a thread per item, while that item waits
            (see :data:`HEAD_START_AFTER`). Never with ``probe_threads=False``.

    Returns:
        A :class:`Sample` with the profile, the sampled results and the data, nothing lost.

    Raises:
        ConfigurationError: ``func`` is not callable, ``data`` is not iterable, bad ``sample_size``.
        SamplingError: ``func`` raised on an item; the original exception is ``__cause__``.

    Example:
        >>> s = sample(lambda x: x * x, range(10))
        >>> s.results[:3]
        (0, 1, 4)
        >>> list(s.data()) == list(range(10))
        True
    """
    if not callable(func):
        raise ConfigurationError(f"func must be callable (got {type(func).__name__}: {func!r:.60})")
    if isinstance(sample_size, bool) or not isinstance(sample_size, int) or sample_size < 1:
        raise ConfigurationError(f"sample_size must be an integer >= 1 (got {sample_size!r})")
    try:
        iterator = iter(data)
    except TypeError:
        raise ConfigurationError(
            f"data must be iterable, e.g. a list, range or generator (got {type(data).__name__})"
        ) from None
    began = clock()
    total = input_length(data)
    is_iterator = iterator is data

    warnings: list[str] = []
    memory = PeakMemory()
    memory.start()
    canary = GilCanary() if probe_threads is not False else None
    head = None
    if (
        head_start
        and probe_threads is not False
        and total is not None
        and 2 <= total <= HEAD_START_ITEMS + 1
        and isinstance(data, (list, tuple, range))  # sliced from another thread: built-ins only
        and hasattr(time, "pthread_getcpuclockid")
    ):
        head = _HeadStart(func, data, clock)
    children_before = _children_cpu()  # None where unknown (then it stays unknown)
    # Items timed in this thread leave out the time it waited for a CPU (other processes running):
    # it is neither the item's work nor its waiting (see amorsize.measure.runqueue). Fakes stay.
    run_queue = RunQueueClock(clock) if clock is time.perf_counter else contextlib.nullcontext(clock)
    with run_queue as item_clock, canary if canary is not None else contextlib.nullcontext():
        serial_cpu = cpu_clock if canary is None else canary.without_canary(cpu_clock)
        measured = _serial_phase(func, iterator, sample_size, total, item_clock, serial_cpu, head, canary)
    child_cpu = None if children_before is None else (_children_cpu() or 0.0) - children_before
    n_serial = len(measured.items)
    gil_held = canary.held_fraction if canary is not None else None
    warmup = _discount_warmup(measured)
    if warmup is not None:
        if canary is not None:  # an import holds the GIL: read the calls after the first one
            gil_held = canary.held_since(measured.first_done_at)
        warnings.append(
            f"the first call took {_fmt_ms(warmup)}, {warmup / measured.durations[0]:.0f}× the next ones "
            "(one-time work: imports, caches, a thread pool starting); the estimate leaves it out, but "
            "each new worker process may pay it again"
        )
    mean = statistics.fmean(measured.durations) if measured.durations else 0.0
    thread_speedup: float | None = None
    probe_threads_used = 2
    if head is not None and head.launched and measured.durations:  # the rest ran a thread per item
        thread_speedup = head.speedup(measured.durations[0])
        probe_threads_used = max(2, len(head.items))
    capped_duration: float | None = None
    capped_blas = 0
    # The probe runs up to 3 × budget of items at serial speed (reference + a GIL-bound pair):
    # keep that within PROBE_FRACTION of the estimated serial run, at least one item per thread.
    probe_budget = PROBE_TARGET_SECONDS
    if total is not None:
        probe_budget = min(probe_budget, PROBE_FRACTION * mean * (total - n_serial) / 3)
    # Computing work the canary has read needs no probe, unless it uses BLAS (the time per item
    # under a worker's cap is measured: _capped_probe); waiting work is probed wide (how far it
    # overlaps).
    waiting = n_serial > 0 and _waiting(measured)
    # Only items that used clearly more CPU than wall time ran on several threads of a library
    # (the canary's own CPU is left out, the clock's granularity is not); reading the loaded
    # libraries costs 0.4–8 ms (threadpoolctl's import and scan, with NumPy loaded).
    several = sum(measured.cpu_times) >= BLAS_CPU_RATIO * sum(measured.durations)
    loaded_blas = blas_threads_loaded() if several else 0
    blas_cap = None if waiting or not n_serial else _blas_cap(loaded_blas)
    canary_read = gil_held is not None and n_serial > 0 and not waiting
    method = _pickled(func)[1]
    listed_for: dict[int, tuple[int, int, float] | None] = {}

    def list_pickles(n: int) -> tuple[int, int, float] | None:
        """:func:`_list_pickles` of the first ``n`` items and results, pickled once for all asking."""
        if n not in listed_for:
            listed_for[n] = _list_pickles(measured.items[:n], measured.results[:n], clock) if n > 1 else None
        return listed_for[n]

    if canary_read and blas_cap is None:
        probe_threads = False
    elif probe_threads is None:
        probe_threads = n_serial > 0 and _probe_informative(method, measured, mean, blas_cap, list_pickles)
        if waiting and _overlap_evident(measured, total, gil_held, child_cpu):
            probe_threads = False  # the waits overlap as far as one can tell; the probe costs too much
    if (
        probe_threads
        and n_serial
        and PROBE_MIN_ITEM_SECONDS <= mean <= PROBE_MAX_ITEM_SECONDS
        and (total is None or total > n_serial)
        and probe_budget >= mean
    ):
        probed = _thread_probe(
            func,
            iterator,
            measured,
            clock,
            cpu_clock,
            probe_budget,
            max_threads=max_probe_threads,
            blas_cap=blas_cap,
        )
        if probed is not None:
            thread_speedup, probe_threads_used, capped_duration, capped_blas = probed
        n_serial = len(measured.durations)
    if canary_read and gil_held is not None:  # the canary's reading as a two-thread speedup (Amdahl)
        thread_speedup, probe_threads_used = 2.0 / (1.0 + gil_held), 2
    else:
        gil_held = None
    later = _Later()
    if n_serial and not waiting:  # after every item already run, the probe's included
        with run_queue as item_clock:
            later = _sample_later(
                func, data, total, len(measured.items), measured.durations, item_clock, cpu_clock
            )
    peak = memory.stop()

    if method is None:
        warnings.append(
            f"{_name(func)} cannot be pickled (not even with cloudpickle), so it cannot run in "
            "process workers; only serial and threads were considered"
        )
    elif method == "cloudpickle":
        warnings.append(f"{_name(func)} pickles only with cloudpickle (a lambda or closure); that is fine")
    listed = list_pickles(n_serial) if method is not None else None
    if listed is not None:
        # every item and result pickles plainly: sizes are their shares of the two lists, as the
        # runner ships them in chunks, and no item needs pickling alone
        items_size, results_size, per_item = listed
        input_bytes = [round(items_size / n_serial)] * n_serial
        output_bytes = [round(results_size / n_serial)] * n_serial
        serialize = [per_item] * n_serial
    else:  # some item or result needs cloudpickle or cannot be pickled: found and named one by one
        pickles = _item_pickles(measured, n_serial, method, clock, warnings)
        input_bytes, output_bytes, serialize, method = pickles

    n_later = len(later.durations)
    if n_later and n_serial:  # sizes and pickling as the first items'; durations their own
        input_bytes += [round(math.fsum(input_bytes) / n_serial)] * n_later
        output_bytes += [round(math.fsum(output_bytes) / n_serial)] * n_later
        serialize += [math.fsum(serialize) / n_serial] * n_later
    profile = Profile(
        durations=(*measured.durations, *later.durations),
        cpu_times=(*measured.cpu_times, *later.cpu_times),
        weights=(
            _spread_weights(measured.durations, later.durations, later.positions, len(measured.items), total)
            if total is not None
            else ()
        ),
        input_bytes=tuple(input_bytes),
        output_bytes=tuple(output_bytes),
        serialize_seconds=tuple(serialize),
        peak_memory_bytes=peak,
        total_items=total,
        thread_speedup=thread_speedup,
        pickle_method=method,
        blas_threads=loaded_blas,
        free_threaded=free_threaded(),
        probe_threads=probe_threads_used,
        capped_duration=capped_duration,
        capped_blas_threads=capped_blas,
        gil_held=gil_held,
    )
    return Sample(
        profile=profile,
        items=tuple(measured.items),
        results=tuple(measured.results),
        later=tuple(zip(later.positions, later.items, later.results, strict=True)),
        warnings=tuple(dict.fromkeys(warnings)),
        process_caveats=global_state_caveats(func),
        seconds=clock() - began,
        _source=data,
        _remaining=iterator,
        _reiterable=not is_iterator,
    )
