"""The runner: streams items through a backend in adaptively sized chunks and yields the results.

The runner owns everything a backend does not: cutting the input into chunks (pulled lazily, so a
generator of millions of items streams through in bounded memory), keeping at most
``max_in_flight`` chunks ahead, adapting the chunk size to measured durations
(:mod:`amorsize.core.chunking`), ordering, the failure policy, Ctrl-C, hooks and the
:class:`~amorsize.run.report.RunReport`.

::

                      runner (the thread iterating over the results)
    items ─islice─► ChunkTask ─submit─► backend ─► worker(s): func(item) for each item
                                           │
                 Future done-callback ◄────┘  (runs in a backend/worker thread: only enqueues)
                        │
                        ▼
             completions: SimpleQueue ──► runner: record, hooks, adapt size, failures
                                               │
                      ready buffers ◄──────────┘  (ordered: keyed by start; unordered: FIFO)
                           │
                        yield ──► caller (``imap`` hands this generator out; ``execute`` lists it)

With a :class:`DispatchGate` (a circuit breaker, a rate limit: :mod:`amorsize.resilience`), every
submission first asks ``gate.admit``: the gate may shrink the chunk, make the runner wait (for time
to pass or for a chunk to finish), or have the next items failed at once without running them
(an open breaker). Each attempted item's outcome goes back with ``gate.record``, so one gate state
covers the whole run, whatever the number of workers. ``on_outcome`` sees every fresh result and
failure (with its item) before it is yielded: checkpoints commit there, dead letters are written there.

Window: at most ``max_in_flight`` chunks are in flight, and chunks in flight plus finished chunks
waiting to be yielded never exceed :data:`READY_SLACK` × ``max_in_flight``, so in ordered mode
results are buffered only while an earlier chunk is still running — and such waiting results do
not starve the workers: when they counted against the in-flight window, a worker that finished
ahead of a slower one found nothing queued (10 µs items on 2 processes: one worker idle 60–85 ms
of a 0.6 s run, in pieces of ~25 ms at the tail).

Example, with a tiny backend that runs chunks as it receives them:

    >>> from concurrent.futures import Future
    >>> from amorsize.run.backend import ChunkOutcome
    >>> class Inline:
    ...     kind, n_workers = "serial", 1
    ...     def submit(self, task):
    ...         future = Future()
    ...         results = [task.func.func(x) for x in task.items]
    ...         future.set_result(ChunkOutcome(task.chunk_id, task.start, results, n_done=len(results)))
    ...         return future
    ...     def abort(self): pass
    >>> runner = Runner(Inline(), lambda x: x * x, range(5), chunksize=2, precomputed=[0])
    >>> list(runner)
    [0, 1, 4, 9, 16]
    >>> runner.report.items_from_dry_run
    1
"""

from __future__ import annotations

import itertools
import math
import operator
import queue
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Sized
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from amorsize.core.chunking import ChunkState, chunksize_for, observe
from amorsize.errors import (
    CircuitOpenError,
    ConfigurationError,
    ExecutionError,
    ItemError,
    ItemTimeoutError,
    WorkerDiedError,
)
from amorsize.run.backend import Backend, ChunkOutcome, ChunkTask, FunctionRef, ItemFailure
from amorsize.run.backends.serial import format_failure
from amorsize.run.hooks import RunHooks, RunInfo
from amorsize.run.report import ChunkRecord, RunReport, RunStatus

__all__ = [
    "DEFAULT_IN_FLIGHT_PER_WORKER",
    "MAX_CHUNK_RECORDS",
    "MAX_FAILURES_KEPT",
    "READY_SLACK",
    "Admission",
    "DispatchGate",
    "Failed",
    "OnError",
    "OutcomeSink",
    "Runner",
]

OnError = Literal["raise", "collect"]

#: Chunks submitted ahead per worker by default: one running, one queued so a worker never waits
#: for the parent between chunks. joblib's ``pre_dispatch`` default is the same ``"2*n_jobs"``.
DEFAULT_IN_FLIGHT_PER_WORKER = 2

#: Finished chunks waiting for an earlier one may hold this many windows of results in all.
READY_SLACK = 2

#: Seconds the runner blocks waiting for a finished chunk before waiting again. Completions wake
#: it at once; this only bounds how long a pending signal (Ctrl-C) can go unnoticed should the
#: wait not be interrupted by it. 0.1 s is below what a person perceives as a delay.
POLL_SECONDS = 0.1

#: Chunk records kept in the report. A record is ~200 bytes, so 10 000 cost ~2 MB; at the default
#: target of 0.2 s per chunk that covers about 15 minutes of two workers. Totals cover every chunk.
MAX_CHUNK_RECORDS = 10_000

#: Item failures kept in the report (an exception with its traceback each). The count covers all;
#: to keep every failure of a long run, attach an ``on_item_error`` hook.
MAX_FAILURES_KEPT = 1_000

_PASS_THROUGH_ERRORS = (WorkerDiedError, ItemTimeoutError, CircuitOpenError)
_END = object()

#: Iterators whose ``length_hint`` is exact: the direct path runs them in a list comprehension
#: (see :meth:`Runner._run_direct`).
_COUNTED_ITERATORS: frozenset[type] = frozenset(
    {type(iter([])), type(iter(())), type(iter(range(0))), type(iter(range(2**64)))}
)


@dataclass(frozen=True)
class Admission:
    """A gate's answer to "may the runner send the next items now?" (see :class:`DispatchGate`).

    Attributes:
        n: items that may be sent now, as one chunk (0: none now).
        wait: when ``n == 0``, seconds after which to ask again; None: ask again when a chunk finishes.
        fail_fast: when set, the next ``n`` items are not sent: each fails at once with this error
            (a circuit breaker that is open), and the function is not called for them.
    """

    n: int
    wait: float | None = None
    fail_fast: BaseException | None = None


class DispatchGate(Protocol):
    """Decides, in the parent, how much work may be sent: one state for the whole run, all workers.

    The runner calls it from the thread iterating over the results only.
    """

    def admit(self, wanted: int, in_flight: int) -> Admission:
        """How many of the next ``wanted`` items may be sent now; ``in_flight``: items sent, not back."""
        ...

    def dispatched(self, admitted: int, start: int, sent: int) -> None:
        """``sent`` (<= ``admitted``) items of the last admission were submitted, from position ``start``."""
        ...

    def record(self, position: int, error: BaseException | None) -> None:
        """The outcome of the attempted item at input ``position``: None for a success."""
        ...


#: ``on_outcome(start, items, results, failures)``: fresh outcomes of consecutive items from input
#: position ``start`` (``results`` holds the placeholder where ``failures`` has an entry), called
#: before they are yielded. Not called for precomputed results (only for precomputed failures).
OutcomeSink = Callable[[int, Sequence[Any], Sequence[Any], Sequence[ItemFailure]], None]

#: Items failed at once per turn while a gate says so (an open breaker): enough to amortise the
#: per-batch work (one ``on_outcome`` call, e.g. one dead-letter transaction) without holding much.
FAIL_FAST_BATCH = 256


def _failed_stub(type_name: str, message: str) -> Failed:
    return Failed(RuntimeError(f"{type_name}: {message}"))


@dataclass(frozen=True)
class Failed:
    """A precomputed result that is in fact a failure (an item that failed in the dry run).

    The runner treats it like any item failure at its position (report, hooks, ``on_outcome``,
    ``on_error``). It is only ever pickled when the dry run measures result sizes, so it pickles
    small and always: as a ``Failed`` holding the error's type and message as text, without the item.

    Attributes:
        error: the exception.
        traceback: its formatted traceback.
        item: the item that failed (handed to ``on_outcome``).
    """

    error: BaseException
    traceback: str = ""
    item: Any = None

    def __reduce__(self) -> tuple[Any, ...]:
        return (_failed_stub, (type(self.error).__qualname__, str(self.error)))


def _error_for(failure: ItemFailure) -> BaseException:
    """The exception a run raises for ``failure`` under ``on_error="raise"``."""
    if isinstance(failure.error, _PASS_THROUGH_ERRORS):
        return failure.error
    error = ItemError(failure.index, failure.error, remote_traceback=failure.traceback or None)
    error.__cause__ = failure.error
    return error


class Runner:
    """Run ``func`` over ``items`` on ``backend``; iterate over the runner to get the results.

    A runner runs once. Iterating starts the run; the results come in input order (``ordered``) or
    in completion order, each item exactly once. After the iteration ended — completed, failed,
    interrupted, or abandoned by the caller — :attr:`report` holds the :class:`RunReport`.

    Args:
        backend: where chunks run.
        func: the function, or a :class:`FunctionRef` made for it. A plain callable is wrapped with
            ``FunctionRef.create`` for process and Dask backends, ``FunctionRef.local`` otherwise.
        items: the input: a sequence, or any iterable (a generator of unknown length, even endless).
            It is pulled lazily, at most ``READY_SLACK × max_in_flight`` chunks ahead of the results.
        chunksize: items per chunk at the start (the plan's).
        target_chunk_duration: seconds one chunk should take; the size adapts toward it.
        n_items: how many items ``items`` holds, when known; defaults to ``len(items)`` when it has a
            length. Used to shrink the tail chunks and for progress, never to stop early.
        start: input position of the first element of ``items`` (e.g. when a dry run consumed a
            prefix of a generator, or when resuming). Indices in errors and the report are positions.
        ordered: yield results in input order (True) or as chunks finish (False).
        on_error: ``"raise"``: the first failure the runner sees (in completion order, so possibly
            before earlier positions were yielded) aborts the backend at once, without waiting for
            chunks in flight, and is raised: :class:`~amorsize.errors.ItemError` naming the index,
            ``from`` the function's own exception; a ``WorkerDiedError``, ``ItemTimeoutError`` or
            ``CircuitOpenError`` as it is. ``"collect"``: every failure is recorded in the report,
            ``placeholder`` is yielded at failed positions, items a chunk never started (it stopped
            at a timeout) are submitted again, and the run carries on.
        placeholder: the result yielded for a failed item under ``"collect"``.
        item_timeout: seconds one item may run, or None (see the backend for what stopping means).
        hooks: callbacks (see :mod:`amorsize.run.hooks`).
        max_in_flight: chunks in flight at most; default ``2 × backend.n_workers`` (finished
            chunks waiting for an earlier one may add as many again, see :data:`READY_SLACK`).
        precomputed: results already known, which are emitted in place without calling ``func``: a
            mapping from input position to result, or a sequence (the results for positions 0, 1, …).
            Positions at or after ``start`` have their item in ``items``: it is pulled and skipped.
            Positions before ``start`` have no item there; they must run without gap up to
            ``start - 1`` and are emitted first. A :class:`Failed` value is a failure of its item.
        check_precomputed: called as ``check(position, item)`` on each item pulled and skipped
            because its result is precomputed; it raises to refuse it (a checkpoint made for other
            data), which stops the run like any error.
        gate: a :class:`DispatchGate` consulted before each submission (breaker, rate limit).
        on_outcome: an :data:`OutcomeSink` (checkpoint commits, dead letters); an exception from it
            stops the run.
        adaptive: adapt the chunk size during the run; False keeps ``chunksize`` throughout (a
            chunk size the user forced), tail included.
        predicted_seconds: the planner's predicted wall time, copied into the report.
        item_seconds: the dry run's seconds per item, or None: the adaptation starts from it, so the
            tail's shortest worthwhile chunk (:func:`~amorsize.core.chunking.chunksize_for`) holds
            from the first chunks on, before any has finished.
        clock: returns seconds; the wall time of the run is measured with it, and a gate's waits.
        sleep: waits that many seconds (when a gate paces the run and nothing is in flight).

    Iterating raises what ``on_error="raise"`` raises; ``KeyboardInterrupt`` (Ctrl-C while the
    runner waits) aborts the backend and propagates; an exception from a hook aborts the backend and
    propagates unchanged. In every case ``on_run_end`` hooks run and :attr:`report` is set first.

    Raises:
        ConfigurationError: when an argument is out of range (the message says which and why).
    """

    def __init__(
        self,
        backend: Backend,
        func: Callable[[Any], Any] | FunctionRef,
        items: Iterable[Any],
        *,
        chunksize: int,
        target_chunk_duration: float = 0.2,
        n_items: int | None = None,
        start: int = 0,
        ordered: bool = True,
        on_error: OnError = "raise",
        placeholder: Any = None,
        item_timeout: float | None = None,
        hooks: Sequence[RunHooks] = (),
        max_in_flight: int | None = None,
        precomputed: Mapping[int, Any] | Sequence[Any] | None = None,
        adaptive: bool = True,
        predicted_seconds: float | None = None,
        item_seconds: float | None = None,
        check_precomputed: Callable[[int, Any], None] | None = None,
        gate: DispatchGate | None = None,
        on_outcome: OutcomeSink | None = None,
        clock: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        n_workers = backend.n_workers
        if isinstance(chunksize, bool) or not isinstance(chunksize, int) or chunksize < 1:
            raise ConfigurationError(f"chunksize must be an integer >= 1 (got {chunksize!r})")
        if not target_chunk_duration > 0:
            raise ConfigurationError(
                f"target_chunk_duration must be > 0 seconds (got {target_chunk_duration!r})"
            )
        if on_error not in ("raise", "collect"):
            raise ConfigurationError(f"on_error must be 'raise' or 'collect' (got {on_error!r})")
        if item_timeout is not None and not item_timeout > 0:
            raise ConfigurationError(
                f"item_timeout must be > 0 seconds or None (got {item_timeout!r}); use None for no limit"
            )
        if max_in_flight is None:
            max_in_flight = DEFAULT_IN_FLIGHT_PER_WORKER * max(1, n_workers)
        if max_in_flight < 1:
            raise ConfigurationError(f"max_in_flight must be >= 1 (got {max_in_flight})")
        if start < 0:
            raise ConfigurationError(f"start must be >= 0 (got {start})")
        if n_items is None and isinstance(items, Sized):
            n_items = len(items)
        if n_items is not None and n_items < 0:
            raise ConfigurationError(f"n_items must be >= 0 or None (got {n_items})")

        pre: dict[int, Any] = (
            dict(precomputed) if isinstance(precomputed, Mapping) else dict(enumerate(precomputed or ()))
        )
        before = sorted(k for k in pre if k < start)
        if before and before != list(range(start - len(before), start)):
            raise ConfigurationError(
                f"precomputed results for positions before start={start} must cover "
                f"{start - len(before)}..{start - 1} without gaps (got positions {before[:10]}); "
                "pass the items from the first missing position on, with start set to it"
            )
        if before and before[0] < 0:
            raise ConfigurationError(f"precomputed positions must be >= 0 (got {before[0]})")

        if isinstance(func, FunctionRef):
            self._func = func
        elif backend.kind in ("processes", "dask"):
            self._func = FunctionRef.create(func)
        else:
            self._func = FunctionRef.local(func)
        self._backend = backend
        self._items = items
        self._n_workers = max(1, n_workers)
        self._initial_chunksize = chunksize
        self._target = float(target_chunk_duration)
        self._n_items = n_items
        self._start = start
        self._ordered = ordered
        self._on_error: OnError = on_error
        self._placeholder = placeholder
        self._item_timeout = item_timeout
        self._hooks = tuple(hooks)
        self._max_in_flight = max_in_flight
        self._pre = pre
        self._pre_keys = sorted(k for k in pre if k >= start)
        self._n_before = len(before)
        self._adaptive = adaptive
        self._predicted = predicted_seconds
        self._check_pre = check_precomputed
        self._gate = gate
        self._on_outcome = on_outcome
        self._clock = clock
        self._sleep = sleep

        self._started = False
        self._report: RunReport | None = None
        # Run state (touched only by the thread iterating over the results).
        self._source: Iterator[Any] = iter(())
        self._completions: queue.SimpleQueue[Future[ChunkOutcome]] = queue.SimpleQueue()
        self._in_flight: dict[Future[ChunkOutcome], ChunkTask] = {}
        self._ready_ordered: dict[int, list[Any]] = {}
        self._ready_fifo: deque[list[Any]] = deque()
        self._next_yield = start - len(before)
        self._position = start
        self._pre_index = 0
        self._exhausted = False
        known = item_seconds is not None and math.isfinite(item_seconds) and item_seconds > 0
        self._state = ChunkState(chunksize=chunksize, per_item=item_seconds if known else None)
        self._chunk_ids = itertools.count()
        self._n_emitted = 0
        self._n_chunks = 0
        self._busy = 0.0
        self._cpu = 0.0
        self._records: list[ChunkRecord] = []
        self._failures: list[ItemFailure] = []
        self._n_failed = 0
        self._n_failed_fast = 0
        self._n_from_pre = 0
        self._items_in_flight = 0
        self._wait_until: float | None = None  # a gate asked to wait until then (runner clock)

    @property
    def total_items(self) -> int | None:
        """How many results the run will produce, when known."""
        return None if self._n_items is None else self._n_items + self._n_before

    @property
    def report(self) -> RunReport:
        """The report of the finished run.

        Raises:
            RuntimeError: when the run has not ended yet.
        """
        if self._report is None:
            raise RuntimeError("the run has not ended yet: iterate over the runner until it stops first")
        return self._report

    def __iter__(self) -> Iterator[Any]:
        """Start the run and return the generator of its results.

        Raises:
            RuntimeError: when the runner was already iterated (a runner runs once).
        """
        return self._flatten(self._start_run(count_batches=False))

    def batches(self) -> Iterator[list[Any]]:
        """Start the run and yield its results a chunk's worth at a time, in the run's order.

        For callers that keep every result (``execute``): one generator step per chunk instead of
        per item, which is most of the runner's own cost on trivial items.

        Raises:
            RuntimeError: when the runner was already iterated (a runner runs once).
        """
        return self._start_run(count_batches=True)

    def _start_run(self, *, count_batches: bool) -> Iterator[list[Any]]:
        if self._started:
            raise RuntimeError("this Runner has already run; create a new Runner for another run")
        self._started = True
        return self._run(count_batches)

    def _flatten(self, batches: Iterator[list[Any]]) -> Iterator[Any]:
        try:
            for buffer in batches:
                for result in buffer:
                    self._n_emitted += 1
                    yield result
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()

    # -- the loop ---------------------------------------------------------------------------------

    def _run(self, count_batches: bool) -> Iterator[list[Any]]:
        started_at = self._clock()
        status: RunStatus = "completed"
        error: BaseException | None = None
        self._source = iter(self._items)
        try:
            info = RunInfo(
                executor=self._backend.kind,
                n_workers=self._n_workers,
                total_items=self.total_items,
                initial_chunksize=self._initial_chunksize,
                target_chunk_duration=self._target,
                max_in_flight=self._max_in_flight,
                ordered=self._ordered,
                on_error=self._on_error,
                items_from_dry_run=len(self._pre),
            )
            for hook in self._hooks:
                hook.on_run_start(info)
            if self._n_before:
                first = self._start - self._n_before
                self._add_ready(first, [self._pre[k] for k in range(first, self._start)], precomputed=True)
            if count_batches and self._direct():
                everything = self._run_direct(self._pop_ready() or [])
                if everything:
                    self._n_emitted += len(everything)
                    yield everything
                return
            while True:
                self._fill()
                buffer = self._pop_ready()
                if buffer is not None:
                    self._fill()  # its slot is free: keep the workers busy while the caller consumes
                    if count_batches:
                        self._n_emitted += len(buffer)
                    yield buffer
                    continue
                if not self._in_flight:
                    if self._exhausted and not self._ready_ordered and not self._ready_fifo:
                        break
                    if self._wait_until is not None:  # a gate paces the run; nothing to collect meanwhile
                        self._sleep(max(0.0, self._wait_until - self._clock()))
                        continue
                    raise RuntimeError(  # pragma: no cover - an invariant of this loop
                        f"amorsize internal error: nothing in flight but results at "
                        f"{sorted(self._ready_ordered)[:5]} wait for position {self._next_yield}"
                    )
                self._collect(block=True, until=self._wait_until)
        except GeneratorExit:
            status = "cancelled"
            raise
        except KeyboardInterrupt as exc:
            status, error = "interrupted", exc
            raise
        except BaseException as exc:
            status, error = "failed", exc
            raise
        finally:
            if status in ("failed", "interrupted") or self._in_flight:
                self._abort()
            self._finish(status, error, self._clock() - started_at)

    def _direct(self) -> bool:
        """Whether to map the rest of the input in one pass in this thread (see :meth:`_run_direct`).

        Only for an inline backend (serial) and a known-length input whose results are all kept
        (``batches()``, as ``execute`` uses it), and when nothing needs the run in chunks: no
        hooks, gate, item timeout, outcome sink or results at later positions, failures raised.
        """
        return (
            bool(getattr(self._backend, "runs_inline", False))
            and self._n_items is not None
            and not self._hooks
            and self._gate is None
            and self._item_timeout is None
            and self._on_outcome is None
            and self._on_error == "raise"
            and not self._pre_keys
        )

    def _run_direct(self, results: list[Any]) -> list[Any]:
        """Call the function on every remaining item, as one chunk without copying the items.

        ``results`` are those the dry run made before this position; the returned list has them
        first, then the rest's. The rest of a list, tuple or range runs in a list comprehension,
        as a plain serial loop does: CPython inlines its calls, and ``list(map(f, ...))`` of a
        trivial function is 5–13 % slower (1M × ``x*x``: ~70 against ~65 ms); the dry run's
        results then go in front (moving a million pointers: ~0.6 ms). On a failure, how far the
        iterator got names the item that raised. Other inputs go on the end of ``results`` with
        ``list.extend``, which keeps the results made before an exception: their count names it.
        The item is raised as under chunks (:func:`_error_for`).
        """
        func = self._func.func
        source = self._source
        start = self._position
        before = len(results)
        left = operator.length_hint(source) if type(source) in _COUNTED_ITERATORS else -1
        failure: ItemFailure | None = None
        started = time.perf_counter()
        cpu_started = time.thread_time()
        if left >= 0:
            try:
                made = [func(item) for item in source]
            except Exception as error:
                n_done = left - operator.length_hint(source)  # the one that raised included
                failure = format_failure(start + n_done - 1, error)
            else:
                n_done = len(made)
                if results:
                    made[:0] = results
                results = made
        else:
            try:
                results.extend(map(func, source))
            except Exception as error:
                failure = format_failure(start + len(results) - before, error)
            n_done = len(results) - before + (failure is not None)
        duration = time.perf_counter() - started
        cpu = time.thread_time() - cpu_started
        self._exhausted = True
        self._position = start + n_done
        if n_done:
            self._n_chunks += 1
            self._busy += duration
            self._cpu += cpu
            record = ChunkRecord(
                chunk_id=next(self._chunk_ids),
                start=start,
                size=n_done,
                duration=duration,
                cpu_time=cpu,
                worker="serial",
                n_failed=int(failure is not None),
            )
            self._records.append(record)
        if failure is not None:
            self._outcome(failure.index, (), (self._placeholder,), (failure,))  # raises
        return results

    def _fill(self) -> None:
        """Submit chunks (and take precomputed results) until the window is full or the input ends.

        When the gate says to wait, returns with ``_wait_until`` set (None otherwise).
        """
        self._wait_until = None
        while not self._exhausted:
            self._collect(block=False)  # adapt from chunks already finished before sizing the next
            in_flight = len(self._in_flight)
            waiting = len(self._ready_ordered) + len(self._ready_fifo)
            if in_flight >= self._max_in_flight or in_flight + waiting >= READY_SLACK * self._max_in_flight:
                return
            next_pre = self._pre_keys[self._pre_index] if self._pre_index < len(self._pre_keys) else None
            if next_pre == self._position:
                self._take_precomputed()
                continue
            size = self._next_size()
            if next_pre is not None:
                size = min(size, next_pre - self._position)
            admitted = granted = size
            if self._gate is not None:
                admission = self._gate.admit(size, self._items_in_flight)
                if admission.fail_fast is not None:
                    batch = max(1, admission.n)
                    if next_pre is not None:
                        batch = min(batch, next_pre - self._position)
                    self._fail_fast(batch, admission.fail_fast)
                    continue
                if admission.n < 1:
                    wait = admission.wait
                    if wait is None and not self._in_flight:
                        wait = POLL_SECONDS  # waits for a chunk of another run (a shared breaker)
                    if wait is not None:
                        self._wait_until = self._clock() + max(0.0, wait)
                    return
                granted = admission.n
                admitted = min(size, granted)
            items = list(itertools.islice(self._source, admitted))
            if len(items) < admitted:
                self._exhausted = True
            if self._gate is not None:
                self._gate.dispatched(granted, self._position, len(items))
            if not items:
                return
            start = self._position
            self._position += len(items)
            self._submit(start, items)

    def _fail_fast(self, n: int, error: BaseException) -> None:
        """Pull up to ``n`` items and fail each with ``error`` without running it (an open breaker)."""
        items = list(itertools.islice(self._source, n))
        if len(items) < n:
            self._exhausted = True
        if not items:
            return
        start = self._position
        self._position += len(items)
        self._n_failed_fast += len(items)
        failures = [ItemFailure(start + offset, error) for offset in range(len(items))]
        results = [self._placeholder] * len(items)
        record = ChunkRecord(
            chunk_id=-1, start=start, size=len(items), duration=0.0, worker="parent", n_failed=len(items)
        )
        for hook in self._hooks:
            hook.on_chunk_done(record)
        self._outcome(start, items, results, failures)
        self._add_ready(start, results)

    def _take_precomputed(self) -> None:
        """Pull the items at consecutive precomputed positions, skipping them; buffer their results."""
        first = self._position
        results: list[Any] = []
        keys = self._pre_keys
        while self._pre_index < len(keys) and keys[self._pre_index] == self._position:
            item = next(self._source, _END)
            if item is _END:
                self._exhausted = True
                break
            if self._check_pre is not None:
                self._check_pre(self._position, item)
            results.append(self._pre[self._position])
            self._position += 1
            self._pre_index += 1
        if results:
            self._add_ready(first, results, precomputed=True)

    def _next_size(self) -> int:
        if not self._adaptive:
            return self._initial_chunksize
        remaining: int | None = None
        if self._n_items is not None:
            left = self._start + self._n_items - self._position
            remaining = left if left > 0 else None  # None: the declared length was too short
        return chunksize_for(self._state, remaining, self._n_workers)

    def _submit(self, start: int, items: list[Any]) -> None:
        task = ChunkTask(
            chunk_id=next(self._chunk_ids),
            start=start,
            items=items,
            func=self._func,
            stop_on_error=self._on_error == "raise",
            item_timeout=self._item_timeout,
        )
        future = self._backend.submit(task)
        self._in_flight[future] = task
        self._items_in_flight += len(items)
        future.add_done_callback(self._completions.put)

    def _collect(self, *, block: bool, until: float | None = None) -> None:
        """Handle every finished chunk; with ``block``, first wait for at least one (or until ``until``)."""
        while self._in_flight:
            if not block and self._completions.empty():
                return
            timeout = POLL_SECONDS
            if block and until is not None:
                left = until - self._clock()
                if left <= 0:
                    return  # a gate asked to be consulted again now
                timeout = min(timeout, left)
            try:
                future = self._completions.get(timeout=timeout) if block else self._completions.get_nowait()
            except queue.Empty:
                if block:
                    continue
                return
            block = False
            task = self._in_flight.pop(future, None)
            if task is not None:
                self._items_in_flight -= len(task.items)
                self._handle(task, future)

    def _handle(self, task: ChunkTask, future: Future[ChunkOutcome]) -> None:
        """Record one finished chunk, adapt, apply the failure policy, buffer its results."""
        end = task.start + len(task.items) - 1
        try:
            outcome = future.result()
        except CancelledError as exc:
            raise ExecutionError(
                f"chunk {task.chunk_id} (items {task.start}..{end}) was cancelled: the backend was "
                "closed or aborted while this run was using it"
            ) from exc
        failures = outcome.failures
        n_done = min(max(outcome.n_done, 0), len(task.items))
        for failure in failures:  # a failed item counts as attempted, whatever the backend said
            n_done = max(n_done, min(failure.index - task.start + 1, len(task.items)))
        if n_done == 0:
            raise ExecutionError(
                f"the {self._backend.kind} backend returned chunk {task.chunk_id} "
                f"(items {task.start}..{end}) with no item attempted and no failure, "
                "which breaks the backend contract"
            )
        record = ChunkRecord(
            chunk_id=task.chunk_id,
            start=task.start,
            size=n_done,
            duration=outcome.duration,
            cpu_time=outcome.cpu_time,
            worker=outcome.worker,
            n_failed=len(failures),
        )
        self._n_chunks += 1
        self._busy += outcome.duration
        self._cpu += outcome.cpu_time
        if len(self._records) < MAX_CHUNK_RECORDS:
            self._records.append(record)
        if self._adaptive:
            self._state = observe(self._state, outcome.duration, n_done, self._target)
        for hook in self._hooks:
            hook.on_chunk_done(record)

        raw = outcome.results  # a fresh list from the backend, nobody else's: no copy when complete
        results = raw if type(raw) is list and len(raw) == n_done else list(raw[:n_done])
        results.extend([self._placeholder] * (n_done - len(results)))
        failed_at: dict[int, ItemFailure] = {}
        for failure in failures:
            offset = failure.index - task.start
            if 0 <= offset < n_done:
                results[offset] = self._placeholder
                failed_at[offset] = failure
        if self._gate is not None:
            for offset in range(n_done):
                failed = failed_at.get(offset)
                self._gate.record(task.start + offset, None if failed is None else failed.error)
        attempted = task.items if n_done == len(task.items) else task.items[:n_done]
        self._outcome(task.start, attempted, results, failures)
        self._add_ready(task.start, results)
        if n_done < len(task.items):  # the chunk stopped early: its never-started items go again
            self._submit(task.start + n_done, list(task.items[n_done:]))

    def _outcome(
        self, start: int, items: Sequence[Any], results: Sequence[Any], failures: Sequence[ItemFailure]
    ) -> None:
        """Hand fresh outcomes to ``on_outcome``, then apply the failure policy to the failures."""
        if self._on_outcome is not None:
            self._on_outcome(start, items, results, failures)
        for failure in failures:
            self._n_failed += 1
            if len(self._failures) < MAX_FAILURES_KEPT:
                self._failures.append(failure)
            for hook in self._hooks:
                hook.on_item_error(failure)
            if self._on_error == "raise":
                raise _error_for(failure)

    def _add_ready(self, start: int, results: list[Any], *, precomputed: bool = False) -> None:
        if precomputed:
            self._n_from_pre += len(results)
            for offset, value in enumerate(results):
                if isinstance(value, Failed):  # an item that failed in the dry run
                    results[offset] = self._placeholder
                    failure = ItemFailure(start + offset, value.error, value.traceback)
                    self._outcome(start + offset, [value.item], [self._placeholder], [failure])
        if self._ordered:
            self._ready_ordered[start] = results
        else:
            self._ready_fifo.append(results)

    def _pop_ready(self) -> list[Any] | None:
        if not self._ordered:
            return self._ready_fifo.popleft() if self._ready_fifo else None
        buffer = self._ready_ordered.pop(self._next_yield, None)
        if buffer is not None:
            self._next_yield += len(buffer)
        return buffer

    # -- the end ----------------------------------------------------------------------------------

    def _abort(self) -> None:
        """Stop the backend's work now; never let a failing abort hide the run's own error."""
        self._in_flight.clear()
        self._items_in_flight = 0
        try:
            self._backend.abort()
        except Exception as exc:  # the run is already ending with its own error or status
            warnings.warn(
                f"aborting the {self._backend.kind} backend failed: {exc!r}", RuntimeWarning, stacklevel=2
            )

    def _finish(self, status: RunStatus, error: BaseException | None, wall: float) -> None:
        """Build the report and call ``on_run_end`` on every hook."""
        self._report = RunReport(
            executor=self._backend.kind,
            n_workers=self._n_workers,
            status=status,
            n_items=self._n_emitted,
            total_items=self.total_items,
            wall_seconds=max(wall, 0.0),
            busy_seconds=self._busy,
            cpu_seconds=self._cpu,
            n_chunks=self._n_chunks,
            initial_chunksize=self._initial_chunksize,
            final_chunksize=self._state.chunksize,
            chunks=tuple(self._records),
            failures=tuple(self._failures),
            n_failed=self._n_failed,
            n_failed_fast=self._n_failed_fast,
            items_from_dry_run=self._n_from_pre,
            predicted_seconds=self._predicted,
            error=error,
        )
        first: Exception | None = None
        for hook in self._hooks:
            try:
                hook.on_run_end(self._report)
            except Exception as exc:
                first = first or exc
        if first is None:
            return
        if status == "completed":
            raise first
        warnings.warn(
            f"a hook's on_run_end raised {first!r} while the run ended with status {status!r}; "
            "the run's own outcome is reported instead",
            RuntimeWarning,
            stacklevel=2,
        )
