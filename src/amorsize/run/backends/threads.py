"""The thread backend: ``n_workers`` daemon threads of this process run the chunks.

Flow::

    runner ──submit──► _queue (SimpleQueue) ──► worker thread k ──► func(item) per item
       ▲                                                   │  (claims the job under job.lock
       │                                                   │   at its end)
       └──────────── Future[ChunkOutcome] ◄────────────────┤
                                                           │
    watchdog thread (only while a chunk with item_timeout runs): every WATCH_INTERVAL it claims a
    job whose current item is over time, resolves its future with ItemTimeoutError, abandons the
    stuck thread and starts a replacement.

Why not ``concurrent.futures.ThreadPoolExecutor``: its threads are joined at interpreter exit, so one
hung item would keep the program from exiting; ours are daemon threads. Like it, idle threads wait
in ``SimpleQueue.get`` (C code, no Python lock per job): a deque with a ``threading.Condition``
cost ~20–35 µs per chunk here, ~6× a ThreadPool's per-task cost, and 400 single-item chunks of
waiting work on 64 threads spent more time in dispatch than in waiting.

A thread cannot be killed. An item that times out keeps running in its abandoned thread until it
returns by itself; its result is then dropped and the thread exits. ``abort()`` does the same to every
busy thread: their chunks resolve at once (``CancelledError``), the items they were running finish in
the background, and the rest of those chunks is not started (threads check between items).
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
import warnings
from concurrent.futures import CancelledError, Future
from typing import Any

from amorsize._closing import ClosingContext
from amorsize._native import RUNNING_USER_CODE
from amorsize.core.types import ExecutorKind
from amorsize.errors import ConfigurationError, ItemTimeoutError
from amorsize.run.backend import ChunkOutcome, ChunkTask, ItemFailure
from amorsize.run.backends.serial import format_failure

__all__ = ["ThreadBackend"]

#: Seconds between two checks of the watchdog while a chunk with a timeout runs. The contract asks
#: for timeouts to be noticed within ~0.1 s; 0.05 s costs ~20 wake-ups per second, only while
#: timed chunks run.
WATCH_INTERVAL = 0.05

#: Seconds ``close()`` waits for idle threads to exit; they exit within microseconds of being told,
#: so this only bounds the wait when one is still busy in an item (it is abandoned, being daemon).
CLOSE_JOIN_TIMEOUT = 0.5


class _Job:
    """One submitted chunk and its progress, shared by a worker thread and the watchdog."""

    __slots__ = (
        "claimed",
        "cpu_started",
        "epoch",
        "failures",
        "future",
        "item_started",
        "lock",
        "pos",
        "results",
        "started",
        "task",
    )

    def __init__(self, task: ChunkTask, future: Future[ChunkOutcome], epoch: int) -> None:
        self.task = task
        self.future = future
        self.epoch = epoch  # the backend's abort count at submit: a job queued before an abort is dropped
        self.lock = threading.Lock()
        self.claimed = False  # set by whoever resolves the future (worker, watchdog, abort)
        self.pos = -1  # position of the item running now
        self.results: list[Any] = []  # appended by the worker thread only
        self.failures: list[ItemFailure] = []
        self.item_started = 0.0
        self.started = 0.0
        self.cpu_started = 0.0


class _Worker:
    """A worker thread's identity, its current job, and whether it was abandoned."""

    __slots__ = ("abandoned", "job", "name", "thread")

    def __init__(self, name: str) -> None:
        self.name = name
        self.job: _Job | None = None
        self.abandoned = False
        self.thread: threading.Thread | None = None


class ThreadBackend(ClosingContext):
    """Runs chunks on ``n_workers`` daemon threads.

    Args:
        n_workers: how many threads (>= 1).

    Raises:
        ConfigurationError: ``n_workers`` < 1.
    """

    kind: ExecutorKind = "threads"

    def __init__(self, n_workers: int) -> None:
        if n_workers < 1:
            raise ConfigurationError(f"n_workers must be >= 1 (got {n_workers})")
        self._n_workers = n_workers
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()  # None: a thread must exit
        self._epoch = 0  # abort() count: jobs submitted before the latest abort are not run
        self._workers: list[_Worker] = []
        self._closed = False
        self._names = itertools.count()
        self._timed_running = threading.Event()  # set while a chunk with item_timeout may be running
        self._watchdog: threading.Thread | None = None
        # The threads start with the first chunk, all of them before it runs: started one per chunk
        # while the first ones already ran waiting items, a start took ~200 µs instead of ~100 (each
        # waits for the GIL among threads waking up), and 147 threads for 1000 × 5 ms sleeps were
        # still starting 60–100 ms into the run (81–87 ms in all, against 108–120).

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    @property
    def n_workers(self) -> int:
        """How many chunks can run at the same time."""
        return self._n_workers

    @property
    def idle_workers(self) -> int:
        """Threads waiting for a chunk right now."""
        with self._lock:
            return sum(1 for w in self._workers if w.job is None) if not self._closed else 0

    def submit(self, task: ChunkTask) -> Future[ChunkOutcome]:
        """Queue one chunk for the next free thread.

        Args:
            task: the chunk.

        Returns:
            A future resolved with the chunk's outcome (cancelled if the backend is closed, aborted
            before the chunk started, or aborted while it ran: then ``result()`` raises
            ``CancelledError``).
        """
        future: Future[ChunkOutcome] = Future()
        with self._lock:
            if self._closed:
                future.cancel()
                return future
            while len(self._workers) < self._n_workers:  # all of them, before the first chunk runs
                if not self._start_worker():
                    break
            self._queue.put(_Job(task, future, self._epoch))
        return future

    def abort(self) -> None:
        """Cancel queued chunks, resolve running ones with ``CancelledError`` and replace busy threads.

        The items those threads are running finish in the background; their results are dropped.
        """
        with self._lock:
            cancelled = self._abort_locked()
        for job in cancelled:
            job.future.set_exception(CancelledError())

    def close(self) -> None:
        """Abort all work and stop every thread. Idempotent.

        Idle threads exit at once; a thread stuck in an item is left to finish it (it is a daemon
        thread and will not keep the interpreter alive).
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            cancelled = self._abort_locked(replace=False)
            threads = [w.thread for w in self._workers if w.thread is not None]
            for _ in self._workers:  # one stop for each idle thread (the busy ones were abandoned)
                self._queue.put(None)
            self._workers.clear()
        self._timed_running.set()  # wake the watchdog so it sees _closed
        for job in cancelled:
            job.future.set_exception(CancelledError())
        deadline = time.monotonic() + CLOSE_JOIN_TIMEOUT
        current = threading.current_thread()
        for thread in threads:
            if thread is not current:
                thread.join(max(0.0, deadline - time.monotonic()))

    def __repr__(self) -> str:
        return f"ThreadBackend(n_workers={self._n_workers}, closed={self._closed})"

    # -- internals (called with self._lock held unless said otherwise) ---------------------------

    def _start_worker(self) -> bool:
        """Start one more thread; False when the OS refused it but others already run.

        Raises:
            RuntimeError: the OS refused the only thread (a limit on threads or processes).
        """
        worker = _Worker(f"thread:{next(self._names)}")
        thread = threading.Thread(
            target=self._work, args=(worker,), name=f"amorsize-{worker.name}", daemon=True
        )
        worker.thread = thread
        self._workers.append(worker)
        try:
            thread.start()
        except RuntimeError as error:  # "can't start new thread": ulimit -u, a cgroup's pids.max
            self._workers.remove(worker)
            if not self._workers:
                raise
            warnings.warn(
                f"the thread backend runs on {len(self._workers)} threads, not {self._n_workers}: the "
                f"system refused more ({error}); raise the limit on threads or pass a smaller n_jobs",
                RuntimeWarning,
                stacklevel=4,
            )
            self._n_workers = len(self._workers)
            return False
        return True

    def _abandon(self, worker: _Worker, *, replace: bool) -> None:
        worker.abandoned = True
        self._workers.remove(worker)
        if replace and not self._closed:
            self._start_worker()

    def _abort_locked(self, *, replace: bool = True) -> list[_Job]:
        """Cancel queued jobs, claim running ones; return the claimed jobs to fail outside the lock.

        A job a thread has taken from the queue but not yet started is dropped by that thread: its
        epoch is now behind (:meth:`_next_job`).
        """
        self._epoch += 1
        while True:
            try:
                queued = self._queue.get_nowait()
            except queue.Empty:
                break
            if queued is not None:
                queued.future.cancel()
        claimed: list[_Job] = []
        for worker in list(self._workers):
            job = worker.job
            if job is None:
                continue
            with job.lock:
                if job.claimed:
                    continue
                job.claimed = True
            claimed.append(job)
            self._abandon(worker, replace=replace)
        return claimed

    def _next_job(self, worker: _Worker) -> _Job | None:
        """Block until a job is queued (None: this thread must exit). Called without the lock."""
        while True:
            job = self._queue.get()
            if job is None:  # close() asked one thread to stop
                return None
            with self._lock:
                if job.epoch != self._epoch:  # queued before an abort that no longer saw it queued
                    job.future.cancel()
                    continue
                if job.future.set_running_or_notify_cancel():
                    worker.job = job
                    return job

    def _work(self, worker: _Worker) -> None:
        """A worker thread's loop (runs without the lock)."""
        while (job := self._next_job(worker)) is not None:
            with RUNNING_USER_CODE:
                outcome = self._run(job, worker)
            if outcome is not None:
                job.future.set_result(outcome)
            with self._lock:
                worker.job = None
                if worker.abandoned:  # timed out or aborted meanwhile: a replacement took its place
                    return

    def _run(self, job: _Job, worker: _Worker) -> ChunkOutcome | None:
        """Run the items of ``job``; None when someone else (watchdog, abort) claimed it meanwhile."""
        task = job.task
        func = task.func.func
        results = job.results
        failures = job.failures
        timed = task.item_timeout is not None
        if timed:
            self._ensure_watchdog()
            self._timed_running.set()
        job.started = time.perf_counter()
        job.cpu_started = time.thread_time()
        stop = False
        for pos, item in enumerate(task.items):
            if timed:  # the watchdog reads pos and item_started together, under the job's lock
                with job.lock:
                    if job.claimed:
                        return None
                    job.pos = pos
                    job.item_started = time.monotonic()
            elif job.claimed:  # aborted: stop between items (the claim at the end is the locked one)
                return None
            try:
                result = func(item)
            except BaseException as error:  # not the main thread: no Ctrl-C; SystemExit is an item failure
                result = None
                failures.append(format_failure(task.start + pos, error))
                stop = task.stop_on_error
            results.append(result)
            if stop:
                break
        with job.lock:
            if job.claimed:
                return None
            job.claimed = True
        return ChunkOutcome(
            chunk_id=task.chunk_id,
            start=task.start,
            results=results,
            failures=tuple(failures),
            n_done=len(results),
            duration=time.perf_counter() - job.started,
            cpu_time=time.thread_time() - job.cpu_started,
            worker=worker.name,
        )

    def _ensure_watchdog(self) -> None:
        with self._lock:
            if self._watchdog is None and not self._closed:
                self._watchdog = threading.Thread(
                    target=self._watch, name="amorsize-thread-watchdog", daemon=True
                )
                self._watchdog.start()

    def _watch(self) -> None:
        """The watchdog loop: time out stuck items (runs without the lock)."""
        while True:
            self._timed_running.wait()
            if self._closed:
                return
            time.sleep(WATCH_INTERVAL)
            expired: list[tuple[_Job, _Worker, int]] = []
            any_timed = False
            now = time.monotonic()
            with self._lock:
                for worker in list(self._workers):
                    job = worker.job
                    if job is None or job.task.item_timeout is None:
                        continue
                    any_timed = True
                    with job.lock:
                        if job.claimed or job.pos < 0 or now - job.item_started <= job.task.item_timeout:
                            continue
                        job.claimed = True
                        pos = job.pos
                    expired.append((job, worker, pos))
                    self._abandon(worker, replace=True)
                if not any_timed:
                    self._timed_running.clear()
            for job, worker, pos in expired:
                job.future.set_result(_timed_out(job, worker, pos))


def _timed_out(job: _Job, worker: _Worker, pos: int) -> ChunkOutcome:
    """The outcome of a job whose item at ``pos`` ran over time (results before it are kept).

    The job was claimed after its worker published ``pos`` under ``job.lock``, so every result and
    failure of the items before ``pos`` was appended before; the abandoned thread may still append
    the late result of ``pos`` itself, which the slice leaves out.
    """
    task = job.task
    assert task.item_timeout is not None
    index = task.start + pos
    results = [*job.results[:pos], None]
    failures = [f for f in job.failures if f.index < index]
    failures.append(ItemFailure(index, ItemTimeoutError(index, task.item_timeout)))
    return ChunkOutcome(
        chunk_id=task.chunk_id,
        start=task.start,
        results=results,
        failures=tuple(failures),
        n_done=pos + 1,
        duration=time.perf_counter() - job.started,
        cpu_time=0.0,
        worker=worker.name,
    )
