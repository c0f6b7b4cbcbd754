"""The process backend: a pool of worker processes that survives their deaths and timeouts.

Written on :mod:`multiprocessing` primitives rather than ``multiprocessing.Pool`` or
``ProcessPoolExecutor``: those hang or break the whole pool when a worker dies and cannot tell which
items were in flight. Here each worker has its own task pipe, its own result pipe and its own shared
``slot`` saying which item it runs since when, so a death or a timeout costs exactly the items
involved.

::

    runner thread(s)          manager thread (one per backend)                 worker processes
    ────────────────          ───────────────────────────────                  ────────────────
    submit(task):             loop:                                            amorsize.run._worker
      pickle items              wait(result pipes + process sentinels      ┌─► main(): one frame per
      ┌ lock ───────────┐            + wake pipe, timeout = next deadline) │   chunk, READY / ITEM /
      │ free worker?  ──┼─────────── task frame ──────────────────────────►┘   FAIL / DONE back
      │  yes: send      │       ◄── frames ──── read, unpickle (no lock)
      │  no: pending ───┼──►   ┌ lock ─────────────────────────────────┐
      └─────────────────┘      │ apply messages; a sentinel fired:     │    slot[] (shared memory):
                               │   drain its pipe, fail the items it   │    item start time and
    Future[ChunkOutcome] ◄─────│   held (WorkerDiedError), requeue     │◄── position, read for
      resolved by the manager  │   chunks it never started;            │    timeouts and deaths
      outside the lock         │ item over time: SIGKILL its worker;   │
                               │ send pending chunks to free workers   │
                               └───────────────────────────────────────┘
                               resolve futures; spawn replacements

Each worker holds at most :data:`PREFETCH` chunks (one running, one waiting in its pipe), so a death
loses little and the work stays balanced. On Linux the pipes are grown to :data:`PIPE_SIZE`. A frame
larger than a quarter of the task pipe (:data:`INLINE_SEND_LIMIT` at the default size) is written by a
per-worker sender thread, so neither ``submit`` nor the manager ever blocks on a full pipe. On
POSIX the manager keeps one selector (epoll) across wake-ups and reads result pipes without blocking,
all waiting frames in one read: about 3× less parent time per chunk than ``ProcessPoolExecutor``.

The function travels once per worker: a :class:`~amorsize.run.backend.FunctionRef` payload is sent
with the first chunk that needs it, and the worker keeps up to :data:`FUNCTION_CACHE_SIZE` of them
(the parent decides which to forget and tells the worker, so the two never disagree).

Failure semantics (see :mod:`amorsize.run.backend`):

- death (signal, segfault, ``os._exit``): the items the worker held and had not reported fail with one
  :class:`~amorsize.errors.WorkerDiedError` (the running item, and the items before it whose results
  were to be sent with the chunk's end); the running chunk comes back with ``n_done`` = position of
  the running item + 1; a chunk the worker had not started yet is given to another worker. Workers
  that keep dying before they are ready (:data:`MAX_START_FAILURES`) fail the queued chunks instead
  of being respawned forever.
- ``item_timeout``: results are streamed item by item, the manager kills the worker when the running
  item passes its deadline, fails it with :class:`~amorsize.errors.ItemTimeoutError` and keeps the
  results before it.
- ``abort()``: busy workers are killed, their chunks and the queued ones resolve with
  ``CancelledError``, replacements are started; idle workers stay.

A death is seen when the worker's process sentinel fires, which needs every copy of the sentinel's
write end closed. Under fork a child inherits every descriptor its parent has open at that instant,
so a fork by another thread while a worker starts would give that child this worker's ends for as
long as it lives (one pool restarting workers after an ``abort()`` while another replaces a dead one
did exactly that, and the second death was never noticed). Hence worker starts hold one lock across
all pools (``_spawn_lock``), and on Linux the manager waits on a pidfd, which fires on the process's
exit whoever holds its descriptors, instead of the sentinel.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import multiprocessing
import multiprocessing.connection
import multiprocessing.util
import os
import pickle
import queue
import selectors
import struct
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import CancelledError, Future
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import Any

import cloudpickle

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

from amorsize._closing import ClosingContext
from amorsize.core.types import ExecutorKind
from amorsize.errors import ConfigurationError, ItemTimeoutError, WorkerDiedError
from amorsize.run import _worker
from amorsize.run.backend import ChunkOutcome, ChunkTask, FunctionRef, ItemFailure

__all__ = ["ProcessBackend", "RemoteError", "RemoteTraceback"]

_log = logging.getLogger(__name__)

#: Chunks one worker holds at once: the running one and the next, already in its pipe, so it never
#: waits for a round trip between chunks. More would lose more work on a death and balance worse;
#: CPython's ProcessPoolExecutor makes the same choice (EXTRA_QUEUED_CALLS = 1).
PREFETCH = 2

#: Frames up to this size are written by the calling thread; larger ones by the worker's sender
#: thread. A worker's task pipe holds at most PREFETCH unread task frames plus the stop frame, and
#: 3 × 16 KiB stays below the Linux pipe buffer (64 KiB, measured), so an inline write never blocks.
#: That is the limit of a pipe of the default size; a grown one (:data:`PIPE_SIZE`) allows
#: ``capacity // (PREFETCH + 2)``, the same share.
INLINE_SEND_LIMIT = 16 * 1024

#: Capacity asked for each worker pipe on Linux (``F_SETPIPE_SZ``; the default is 64 KiB). A worker
#: then writes a chunk's results (12,467 floats: 112 KB) without waiting for the manager to read,
#: and the parent writes task frames up to 64 KiB itself, without starting a sender thread (a
#: thread start took 0.2–2.7 ms while new workers started, before each worker's first chunk). Cold
#: runs of 100k × 10 µs items, 24 each way in one process: 560.8 → 556.8 ms (medians).
PIPE_SIZE = 256 * 1024

#: Pipe capacity this process may add in all (every pool), beyond the default size. Past the
#: per-user limit (``/proc/sys/fs/pipe-user-pages-soft``, 64 MiB by default) Linux gives every new
#: pipe of the user a single page, this process's and other programs' alike: a wide pool keeps its
#: first workers' pipes grown and leaves the rest at the default.
PIPE_BUDGET = 8 * 1024 * 1024

#: Functions a worker keeps unpickled. One run uses one function; 8 covers a reused pool alternating
#: between several without resending, at the memory cost of 8 closures.
FUNCTION_CACHE_SIZE = 8

#: Seconds between timeout checks while a chunk with ``item_timeout`` has not yet reported where it
#: is (the contract asks for ~50–100 ms). Once an item has started the manager sleeps until its exact
#: deadline instead.
TIMEOUT_POLL = 0.05

#: Workers in a row that die before they report READY (a broken start-up: under spawn the main module
#: runs its work again because it lacks ``if __name__ == "__main__"``, or the memory limit is hit at
#: import) after which the pool stops respawning and fails the queued chunks instead of looping; the
#: next submit tries again. Three tells a systematic failure from one unlucky kill.
MAX_START_FAILURES = 3

#: Seconds ``close()`` gives idle workers to exit after the stop message (they exit in milliseconds:
#: measured ~5 ms under fork) before SIGTERM, then TERMINATE_GRACE before SIGKILL.
CLOSE_GRACE = 2.0
TERMINATE_GRACE = 0.5

#: Seconds ``close()`` waits for the manager thread (it exits within one loop turn, microseconds).
MANAGER_JOIN_TIMEOUT = 5.0

#: ``multiprocessing.util.Finalize`` priority: finalizers with a priority run at interpreter exit
#: before multiprocessing joins the remaining child processes; 15 is what ``multiprocessing.Pool``
#: uses for its own terminate finalizer.
EXIT_PRIORITY = 15

#: Bytes read from a result pipe at once: the default Linux pipe capacity (64 KiB), so one read
#: empties a pipe of that size (a grown one, :data:`PIPE_SIZE`, in a few); below glibc's 128 KiB mmap
#: threshold, so the scratch buffer is ordinary heap memory.
READ_SIZE = 64 * 1024

_POS_MASK = 0xFFFFFFFF
_DEFAULT_PIPE_SIZE = 64 * 1024
_FRAME_LEN = struct.Struct("!i")  # multiprocessing.connection's frame header
_FRAME_LEN64 = struct.Struct("!Q")

#: Held by the thread that starts a worker, from creating the worker's pipes until the parent has
#: closed the worker's ends of them (``_Pool._spawn_locked``), across all pools of this process.
#: A fork copies every open descriptor into the child: a worker forked by another pool's manager in
#: that window would hold this worker's ends (the write end of its process sentinel, of its result
#: pipe) for as long as it lives, so this worker's death would not close them and would go unseen.
#: Taken after a pool's own lock, never before. Replaced in a forked child, where it may be held.
_spawn_lock = threading.Lock()


def _after_fork_in_child() -> None:
    global _spawn_lock, _PIPES
    _spawn_lock = threading.Lock()
    _PIPES = _PipeBudget()  # the pipes counted are the parent's (this child closes its copies)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _PipeBudget:
    """Capacity this process added to its worker pipes (:data:`PIPE_BUDGET`), under a lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.used = 0

    def grow(self, end: Connection) -> int:
        """Grow the pipe of ``end`` to :data:`PIPE_SIZE` if the budget allows; return its capacity.

        Where pipes cannot be resized (not Linux) or the system refuses, the pipe keeps the default
        size (taken as 64 KiB). Give back what was added (capacity - 64 KiB) with :meth:`shrink`
        once the pipe is closed.
        """
        setter = getattr(fcntl, "F_SETPIPE_SZ", None) if fcntl is not None else None
        extra = PIPE_SIZE - _DEFAULT_PIPE_SIZE
        if setter is None or extra <= 0:
            return _DEFAULT_PIPE_SIZE
        with self.lock:
            if self.used + extra > PIPE_BUDGET:
                return _DEFAULT_PIPE_SIZE
            self.used += extra
        try:
            capacity = int(fcntl.fcntl(end.fileno(), setter, PIPE_SIZE))
        except (OSError, OverflowError):  # above pipe-max-size, or the user's pipe pages are spent
            capacity = _DEFAULT_PIPE_SIZE
        self.shrink(extra - max(0, capacity - _DEFAULT_PIPE_SIZE))  # keep what was really added
        return capacity

    def shrink(self, added: int) -> None:
        """Give back ``added`` bytes of capacity (of pipes closed now)."""
        with self.lock:
            self.used = max(0, self.used - added)


_PIPES = _PipeBudget()


def _open_pidfd(proc: BaseProcess, start_method: str) -> int | None:
    """A pidfd for ``proc`` (Linux 5.3+): readable once it has exited, whoever holds its descriptors.

    The process sentinel is the read end of a pipe whose write end only the worker should hold; a
    fork by code that is not ours (which ``_spawn_lock`` cannot order) while the worker starts copies
    that end into another process, and the sentinel then stays silent after the worker's death. None
    where there is no pidfd, or under forkserver (the worker is the server's child: its exit status
    reaches us through the sentinel, which ``join`` then reads).
    """
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None or proc.pid is None or start_method == "forkserver":
        return None
    try:
        fd: int = pidfd_open(proc.pid)
    except OSError:  # ENOSYS on kernels before 5.3, EMFILE
        return None
    return fd


class RemoteTraceback(Exception):
    """The traceback text of an exception raised in a worker process, attached as its ``__cause__``."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


class RemoteError(Exception):
    """Stands in for a worker's exception that could not be pickled or unpickled.

    Subclasses are created on the fly with the original type's name, so ``type(error).__name__``
    still reads as the original (e.g. ``"LockHoldingError"``); the message is the original message.
    """


@functools.lru_cache(maxsize=256)
def _substitute_type(name: str) -> type[RemoteError]:
    return type(name.rpartition(".")[2] or "RemoteError", (RemoteError,), {"__module__": __name__})


def _rebuild(encoded: _worker.EncodedError) -> tuple[BaseException, str]:
    """Turn an encoded worker error back into an exception with its remote traceback as cause."""
    blob, name, message, text = encoded
    error: BaseException | None = None
    if blob is not None:
        try:
            error = pickle.loads(blob)
        except Exception:
            error = None
    if not isinstance(error, BaseException):
        error = _substitute_type(name)(f"{message} (the original {name} could not be sent back)")
    error.__cause__ = RemoteTraceback(text)
    return error, text


def _undecodable(what: str, error: BaseException) -> pickle.UnpicklingError:
    failure = pickle.UnpicklingError(
        f"{what} came back from the worker process but cannot be unpickled here "
        f"({type(error).__name__}: {error}); is every class it uses importable in the parent?"
    )
    failure.__cause__ = error
    return failure


class _Job:
    """A submitted chunk: its task, future, pickled items, and what its worker reported so far."""

    __slots__ = ("failures", "future", "items_blob", "payload", "results", "running", "task", "task_no")

    def __init__(self, task: ChunkTask, future: Future[ChunkOutcome], items_blob: bytes, payload: bytes):
        self.task = task
        self.future = future
        self.items_blob = items_blob
        self.payload = payload
        self.task_no = 0  # the worker's count of task frames, when sent
        self.running = False  # future.set_running_or_notify_cancel() was called
        self.results: list[Any] = []
        self.failures: list[ItemFailure] = []


class _Sender:
    """Writes large frames to one worker from its own thread, in order, so no other thread blocks."""

    def __init__(self, conn: Connection, lock: threading.Lock, name: str) -> None:
        self._conn = conn
        self._lock = lock
        self._queue: queue.SimpleQueue[list[bytes] | None] = queue.SimpleQueue()
        self.backlog = 0  # frames queued and not yet written; guarded by the pool lock
        threading.Thread(target=self._run, name=f"amorsize-sender-{name}", daemon=True).start()

    def put(self, parts: list[bytes]) -> None:
        """Queue one frame (its parts are joined in the sender thread). Call with the pool lock held."""
        self.backlog += 1
        self._queue.put(parts)

    def stop(self) -> None:
        """Let the thread exit after the frames already queued."""
        self._queue.put(None)

    def _run(self) -> None:
        while (parts := self._queue.get()) is not None:
            # OSError, ValueError: the worker died (its sentinel tells the manager) or the pool closed
            with contextlib.suppress(OSError, ValueError):
                self._conn.send_bytes(b"".join(parts))
            with self._lock:
                self.backlog -= 1


class _Inbox:
    """Frames from one worker's result pipe, read without blocking and parsed here (POSIX).

    One ``readv`` takes everything the pipe holds, often several frames, where
    ``Connection.recv_bytes`` needs two blocking reads per frame (each one a GIL hand-off). The
    framing is multiprocessing's, as written by ``Connection.send_bytes`` in the worker: a signed
    big-endian 4-byte length, or -1 and then an 8-byte length for frames of 2 GiB or more.
    """

    __slots__ = ("buffer", "fd", "scratch")

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self.fd = fd
        self.buffer = bytearray()  # received, not yet parsed
        self.scratch = bytearray(READ_SIZE)

    def fill(self) -> int:
        """Read what is waiting; return the byte count, 0 at end of file, -1 when nothing is there."""
        try:
            n = os.readv(self.fd, [self.scratch])
        except BlockingIOError:
            return -1
        except OSError:
            return 0
        if n:
            with memoryview(self.scratch) as view:
                self.buffer += view[:n]
        return n

    def parse(self, worker: _Worker, events: list[_Event]) -> None:
        """Decode every complete frame in the buffer into ``events``; keep the incomplete rest."""
        buffer = self.buffer
        size = len(buffer)
        pos = 0
        with memoryview(buffer) as view:
            while size - pos >= _FRAME_LEN.size:
                (n,) = _FRAME_LEN.unpack_from(buffer, pos)
                start = pos + _FRAME_LEN.size
                if n < 0:
                    if size - start < _FRAME_LEN64.size:
                        break
                    (n,) = _FRAME_LEN64.unpack_from(buffer, start)
                    start += _FRAME_LEN64.size
                if start + n > size:
                    break
                events.append(_decode(worker, view[start : start + n]))
                pos = start + n
        if pos:
            self.buffer = buffer[pos:]  # a new bytearray: no view on the old one is resized


class _Worker:
    """The parent's handle on one worker process."""

    __slots__ = (
        "dying",
        "eof",
        "grown",
        "inbox",
        "inline_limit",
        "jobs",
        "keys",
        "kill_reason",
        "large_task",
        "name",
        "pid",
        "pidfd",
        "proc",
        "ready",
        "results",
        "sender",
        "sent",
        "slot",
        "tasks",
    )

    def __init__(
        self,
        proc: BaseProcess,
        tasks: Connection,
        results: Connection,
        slot: Any,
        pidfd: int | None,
        capacities: tuple[int, int],
    ) -> None:
        self.proc = proc
        self.pidfd = pidfd  # readable once the process has exited; None: watch its sentinel instead
        self.tasks = tasks  # parent → worker, blocking writes (small ones inline, large by the sender)
        self.results = results  # worker → parent, read by the manager only
        self.inbox = _Inbox(results.fileno()) if os.name == "posix" else None
        self.slot = slot
        self.pid: int = proc.pid or 0
        self.name = proc.name
        self.jobs: deque[_Job] = deque()  # sent and not finished, oldest (running) first
        self.keys: OrderedDict[str, None] = OrderedDict()  # functions the worker has, LRU order
        self.sent = 0
        self.ready = False
        self.dying = False  # killed by us, sentinel not seen yet: send it nothing more
        self.kill_reason: str | tuple[int, int] | None = None  # "abort", or (task_no, pos) timed out
        self.eof = False
        self.sender: _Sender | None = None
        self.large_task = 0  # task number of the last frame written by the sender thread
        self.grown = sum(max(0, c - _DEFAULT_PIPE_SIZE) for c in capacities)  # bytes, see _PipeBudget
        # frames up to this size are written inline (see INLINE_SEND_LIMIT)
        self.inline_limit = max(INLINE_SEND_LIMIT, capacities[0] // (PREFETCH + 2))

    @property
    def exited(self) -> int:
        """The descriptor that becomes readable when the process has exited: its pidfd or sentinel."""
        return self.proc.sentinel if self.pidfd is None else self.pidfd

    def release(self) -> None:
        """Close the parent's descriptors for this worker (the manager has stopped watching them)."""
        self.tasks.close()
        self.results.close()
        _PIPES.shrink(self.grown)
        self.grown = 0
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None

    def where(self) -> tuple[int, int, int]:
        """(task number, position, start ns) of what the worker runs now; position -1 while decoding."""
        slot = self.slot
        where = slot[0]
        started = slot[1]
        if slot[0] != where:  # it moved on while we read: read again, it cannot move twice that fast
            where = slot[0]
            started = slot[1]
        return where >> 32, (where & _POS_MASK) - 1, started


_Event = tuple[_Worker, int, int, int, Any, BaseException | None]  # worker, kind, task_no, pos, body, error


class _Waiter:
    """What the manager thread sleeps on: result pipes, process sentinels and the wake pipe.

    On POSIX one selector (epoll on Linux) is kept across calls, so a wake-up costs one system
    call; ``multiprocessing.connection.wait`` would build and fill a new one on every call. Elsewhere
    that function is used. Only the manager thread calls these methods.
    """

    def __init__(self, wake: Connection) -> None:
        self._wake = wake
        self._selector = selectors.DefaultSelector() if os.name == "posix" else None
        self._watched: dict[_Worker, bool] = {}  # worker -> its pipe is watched (not at EOF yet)
        if self._selector is not None:
            self._selector.register(wake.fileno(), selectors.EVENT_READ, (None, False))

    def sync(self, workers: list[_Worker]) -> None:
        """Watch the sentinels of ``workers`` and the pipes of those not at EOF."""
        for worker in workers:
            watched = self._watched.get(worker)
            if watched is None:
                self._watched[worker] = not worker.eof
                if self._selector is not None:
                    self._selector.register(worker.exited, selectors.EVENT_READ, (worker, False))
                    if not worker.eof:
                        self._selector.register(worker.results.fileno(), selectors.EVENT_READ, (worker, True))
            elif watched and worker.eof:
                self._watched[worker] = False
                if self._selector is not None:
                    self._selector.unregister(worker.results.fileno())

    def remove(self, worker: _Worker) -> None:
        """Stop watching ``worker``; call before closing its pipe (epoll would keep a stale entry)."""
        watched = self._watched.pop(worker, None)
        if self._selector is not None and watched is not None:
            self._selector.unregister(worker.exited)
            if watched:
                self._selector.unregister(worker.results.fileno())

    def wait(self, timeout: float | None) -> list[tuple[_Worker | None, bool]]:
        """Sleep until something is ready; return (worker or None for the wake pipe, is its pipe)."""
        if self._selector is not None:
            return [key.data for key, _ in self._selector.select(timeout)]
        owners: dict[Any, tuple[_Worker | None, bool]] = {self._wake: (None, False)}
        for worker, watched in self._watched.items():
            owners[worker.exited] = (worker, False)
            if watched:
                owners[worker.results] = (worker, True)
        return [owners[obj] for obj in multiprocessing.connection.wait(list(owners), timeout)]

    def close(self) -> None:
        """Release the selector."""
        if self._selector is not None:
            self._selector.close()


class _Pool:
    """All the state of one process backend, shared by the callers' threads and the manager thread.

    Kept apart from :class:`ProcessBackend` so that its finalizer (and the manager thread) do not
    keep the backend object alive.
    """

    def __init__(self, n_workers: int, ctx: BaseContext, blas_threads: int | None) -> None:
        self.n_workers = n_workers
        self.ctx = ctx
        self.blas_threads = blas_threads
        self.lock = threading.Lock()
        self.ready_changed = threading.Condition(self.lock)
        self.workers: list[_Worker] = []
        self.pending: deque[_Job] = deque()
        self.closed = False
        self.broken = False  # workers keep dying at start-up: do not respawn until the next submit
        self.start_failures = 0
        self.wake_r, self.wake_w = multiprocessing.Pipe(duplex=False)
        self.wake_pending = False
        self.close_requested = False  # set (without the lock) by a finalizer that must not block
        self.untimed_wait = True  # the manager sleeps without a timeout: wake it for a timed chunk
        self.names = itertools.count()
        self.last_local: tuple[FunctionRef, bytes] | None = None
        # The manager starts first: started after the forks, it waited 0.5–2.7 ms for a CPU that the
        # new workers were starting on, and cold runs of 100k × 10 µs items took ~4 ms longer. It
        # sleeps on the wake pipe (no lock held) while the workers are forked.
        self.manager = threading.Thread(target=self._manage, name="amorsize-process-manager", daemon=True)
        self.manager.start()
        try:
            with self.lock:
                blas = self._forked_blas()  # looked up once for all the first workers
                for _ in range(n_workers):
                    self._spawn_locked(blas)
        except BaseException:
            with self.lock:
                self.closed = True
                self.wake_pending = False  # wake it even if a spawn already did
                self._wake_locked()
            self.manager.join(MANAGER_JOIN_TIMEOUT)
            for worker in self.workers:
                worker.proc.kill()
                worker.proc.join()
                worker.release()
            self.wake_r.close()
            self.wake_w.close()
            raise

    # -- called from the callers' threads ---------------------------------------------------------

    def submit(self, task: ChunkTask) -> Future[ChunkOutcome]:
        """See :meth:`ProcessBackend.submit`."""
        future: Future[ChunkOutcome] = Future()
        items = task.items if isinstance(task.items, list) else list(task.items)
        if not items:
            if self.is_closed():
                future.cancel()
            else:
                future.set_running_or_notify_cancel()
                future.set_result(ChunkOutcome(task.chunk_id, task.start, [], (), 0))
            return future
        try:
            items_blob = _worker.dumps(items)
            payload = task.func.payload or self._pickle_local(task.func)
        except Exception as error:
            future.set_running_or_notify_cancel()
            future.set_result(_unsendable(task, error))
            return future
        job = _Job(task, future, items_blob, payload)
        with self.lock:
            if self.is_closed():
                future.cancel()
                return future
            if self.broken:
                self.broken = False
                self.start_failures = 0
                self._replenish_locked()
            worker = None if self.pending else self._free_worker_locked()
            if worker is None:
                self.pending.append(job)
            else:
                job.running = future.set_running_or_notify_cancel()
                self._send_locked(worker, job)
        return future

    def is_closed(self) -> bool:
        """True once closed (a method, so that type checkers do not narrow it between two reads)."""
        return self.closed

    def abort(self) -> None:
        """See :meth:`ProcessBackend.abort`."""
        with self.lock:
            if self.closed:
                return
            cancelled = self._cancel_all_locked("abort")
        for job in cancelled:
            job.future.set_exception(CancelledError())

    def close(self) -> None:
        """See :meth:`ProcessBackend.close`."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            cancelled = self._cancel_all_locked("close")
            self._wake_locked()
            self.ready_changed.notify_all()
        for job in cancelled:
            job.future.set_exception(CancelledError())
        if threading.current_thread() is not self.manager:
            self.manager.join(MANAGER_JOIN_TIMEOUT)
        with self.lock:
            workers, self.workers = self.workers, []
        for worker in workers:
            if worker.dying or (worker.sender is not None and worker.sender.backlog):
                worker.proc.kill()
            else:
                with contextlib.suppress(OSError, ValueError):
                    worker.tasks.send_bytes(b"")  # the stop frame
            if worker.sender is not None:
                worker.sender.stop()
        _stop_processes([worker.proc for worker in workers])
        for worker in workers:
            worker.release()
        self.wake_r.close()
        self.wake_w.close()

    def finalize(self) -> None:
        """Close from a finalizer: at once, or through the manager if this thread may hold the lock.

        A garbage collection can run the finalizer anywhere, including inside one of our locked
        sections; then closing here would deadlock, so the manager thread is asked to do it. That
        includes a worker start in any pool (``_spawn_lock``): this pool's manager may be waiting for
        that lock while it holds this pool's.
        """
        if threading.current_thread() is self.manager or self.lock.locked() or _spawn_lock.locked():
            self.close_requested = True
            with contextlib.suppress(OSError, ValueError):
                self.wake_w.send_bytes(b"")
        else:
            self.close()

    def wait_ready(self, timeout: float | None) -> bool:
        """See :meth:`ProcessBackend.wait_ready`."""
        with self.ready_changed:
            return (
                self.ready_changed.wait_for(
                    lambda: self.closed or sum(1 for w in self.workers if w.ready) >= self.n_workers, timeout
                )
                and not self.closed
            )

    def _pickle_local(self, ref: FunctionRef) -> bytes:
        """Payload of a reference made with ``FunctionRef.local`` (remembered for the last one)."""
        last = self.last_local
        if last is not None and last[0] is ref:
            return last[1]
        payload: bytes = cloudpickle.dumps(ref.func, protocol=5)
        self.last_local = (ref, payload)
        return payload

    # -- with self.lock held ----------------------------------------------------------------------

    def _spawn_locked(self, blas: _worker.ForkedBlas | None) -> None:
        """Start one worker; ``blas``: what :meth:`_forked_blas` found for it (None but under fork)."""
        slot = self.ctx.RawArray("q", 2)
        with _spawn_lock:  # no other pool forks while the worker's ends of its pipes are open here
            tasks_r, tasks_w = self.ctx.Pipe(duplex=False)
            results_r, results_w = self.ctx.Pipe(duplex=False)
            capacities = (_PIPES.grow(tasks_w), _PIPES.grow(results_r))
            proc = self.ctx.Process(  # type: ignore[attr-defined]
                target=_worker.main,
                args=(tasks_r, results_w, slot, self.blas_threads, blas),
                name=f"amorsize-worker-{next(self.names)}",
            )
            try:
                proc.start()
            except BaseException:
                tasks_w.close()
                results_r.close()
                _PIPES.shrink(sum(max(0, c - _DEFAULT_PIPE_SIZE) for c in capacities))
                raise
            finally:
                tasks_r.close()  # the worker's ends: closed here so that only the worker holds them
                results_w.close()
            # Before any other start (whose multiprocessing._cleanup() reaps exited children) could
            # reap this worker and free its pid.
            pidfd = _open_pidfd(proc, self.ctx.get_start_method())
        self.workers.append(_Worker(proc, tasks_w, results_r, slot, pidfd, capacities))
        self._wake_locked()

    def _forked_blas(self) -> _worker.ForkedBlas | None:
        """Under fork with a cap, the parent's libraries above it, for a worker started now.

        Looked up again for each replacement: the caller may have loaded libraries since.
        """
        if self.blas_threads is None or self.ctx.get_start_method() != "fork":
            return None
        return _worker.forked_blas(self.blas_threads)

    def _replenish_locked(self) -> None:
        while not self.closed and not self.broken and len(self.workers) < self.n_workers:
            self._spawn_locked(self._forked_blas())

    def _wake_locked(self) -> None:
        if not self.wake_pending:
            self.wake_pending = True
            self.wake_w.send_bytes(b"")

    def _free_worker_locked(self) -> _Worker | None:
        best: _Worker | None = None
        best_load = PREFETCH
        for worker in self.workers:
            load = len(worker.jobs)
            if load < best_load and not worker.dying:
                best, best_load = worker, load
                if load == 0:
                    break
        return best

    def _send_locked(self, worker: _Worker, job: _Job) -> None:
        task = job.task
        key = task.func.key
        payload: bytes | None = None
        forget: tuple[str, ...] = ()
        if key in worker.keys:
            worker.keys.move_to_end(key)
        else:
            payload = job.payload
            worker.keys[key] = None
            if len(worker.keys) > FUNCTION_CACHE_SIZE:
                forget = (worker.keys.popitem(last=False)[0],)
        timed = task.item_timeout is not None
        control: _worker.Control = (key, payload, forget, task.start, task.stop_on_error, timed)
        control_blob = pickle.dumps(control, protocol=5)
        parts = [_worker.CONTROL_LEN.pack(len(control_blob)), control_blob, job.items_blob]
        worker.sent += 1
        job.task_no = worker.sent
        worker.jobs.append(job)
        if timed and self.untimed_wait:
            self._wake_locked()
        sender = worker.sender
        small = len(control_blob) + len(job.items_blob) < worker.inline_limit
        # Inline only if no large frame may still sit in the pipe: the sender is idle and the worker
        # has started (so read all of) the last large frame's task.
        if small and (sender is None or (not sender.backlog and worker.where()[0] >= worker.large_task)):
            # OSError: the worker died; its sentinel tells the manager, which gives the chunk to another
            with contextlib.suppress(OSError, ValueError):
                worker.tasks.send_bytes(b"".join(parts))
        else:
            if sender is None:
                sender = worker.sender = _Sender(worker.tasks, self.lock, worker.name)
            sender.put(parts)
            worker.large_task = job.task_no

    def _dispatch_locked(self) -> None:
        while self.pending:
            worker = self._free_worker_locked()
            if worker is None:
                return
            job = self.pending.popleft()
            if not job.running:
                if not job.future.set_running_or_notify_cancel():
                    continue  # the caller cancelled it while it waited
                job.running = True
            self._send_locked(worker, job)

    def _cancel_all_locked(self, reason: str) -> list[_Job]:
        """Cancel queued jobs, take the held ones from busy workers and kill those workers."""
        cancelled: list[_Job] = []
        for job in self.pending:
            if job.running or not job.future.cancel():
                cancelled.append(job)
        self.pending.clear()
        for worker in self.workers:
            if worker.jobs:
                cancelled.extend(worker.jobs)
                worker.jobs.clear()
                if not worker.dying:
                    worker.dying = True
                    worker.kill_reason = reason
                    worker.proc.kill()
        return cancelled

    def _check_timeouts_locked(self) -> float | None:
        """Kill workers whose item is over time; return seconds until the next deadline (None: none)."""
        wait: float | None = None
        now = time.monotonic_ns()
        for worker in self.workers:
            if worker.dying or not worker.jobs:
                continue
            job = worker.jobs[0]
            limit = job.task.item_timeout
            if limit is None:
                continue
            task_no, pos, started = worker.where()
            if task_no != job.task_no or pos < 0:
                remaining = TIMEOUT_POLL  # not started yet: look again soon
            else:
                remaining = (started - now) / 1e9 + limit
                if remaining <= 0:
                    worker.dying = True
                    worker.kill_reason = (task_no, pos)
                    worker.proc.kill()
                    continue
            wait = remaining if wait is None else min(wait, remaining)
        return wait

    def _apply_locked(self, event: _Event, resolutions: list[tuple[_Job, ChunkOutcome]]) -> None:
        worker, kind, task_no, pos, body, error = event
        if kind == _worker.READY:
            worker.ready = True
            self.start_failures = 0
            self.ready_changed.notify_all()
            return
        if not worker.jobs or worker.jobs[0].task_no != task_no:
            return  # the job was aborted; its late messages are dropped
        job = worker.jobs[0]
        index = job.task.start + pos
        if kind == _worker.ITEM:
            if error is None:
                job.results.append(body)
            else:
                job.results.append(None)
                job.failures.append(ItemFailure(index, _undecodable(f"the result of item {index}", error)))
        elif kind == _worker.FAIL:
            failure, text = _rebuild(body) if error is None else (_undecodable("an error", error), "")
            job.results.append(None)
            job.failures.append(ItemFailure(index, failure, text))
        elif kind in (_worker.DONE, _worker.CHUNK_ERROR):
            worker.jobs.popleft()
            resolutions.append((job, self._finish(worker, job, kind, body, error)))

    def _finish(
        self, worker: _Worker, job: _Job, kind: int, body: Any, error: BaseException | None
    ) -> ChunkOutcome:
        task = job.task
        start = task.start
        if kind == _worker.DONE and error is None:
            results, failures, n_done, duration, cpu_time = body
            if results is not None:  # not streamed: everything comes now
                job.results = results
                for pos, *encoded in failures:
                    failure, text = _rebuild(tuple(encoded))
                    job.failures.append(ItemFailure(start + pos, failure, text))
            return ChunkOutcome(
                task.chunk_id,
                start,
                job.results,
                tuple(job.failures),
                n_done,
                duration,
                cpu_time,
                f"pid:{worker.pid}",
            )
        # The whole chunk failed: it could not be decoded in the worker, or its results here.
        reported = len(job.results)
        n_items = len(task.items)
        if kind == _worker.CHUNK_ERROR and error is None:
            failure, text = _rebuild(body)
        else:
            assert error is not None
            what = f"the outcome of items {start + reported}..{start + n_items - 1}"
            failure, text = _undecodable(what, error), ""
        results = job.results + [None] * (n_items - reported)
        failures = [*job.failures, *(ItemFailure(start + p, failure, text) for p in range(reported, n_items))]
        return ChunkOutcome(
            task.chunk_id, start, results, tuple(failures), n_items, worker=f"pid:{worker.pid}"
        )

    def _bury_locked(self, worker: _Worker, resolutions: list[tuple[_Job, ChunkOutcome]]) -> None:
        """A worker process has exited and its pipe is drained: settle the chunks it held."""
        self.workers.remove(worker)
        if worker.sender is not None:
            worker.sender.stop()
        worker.release()
        exitcode = worker.proc.exitcode
        reason = worker.kill_reason
        if not worker.ready and reason is None:
            self.start_failures += 1
        run_task, run_pos, _ = worker.where()
        requeue: list[_Job] = []
        settled: list[tuple[_Job, int, range, int | None]] = []  # job, n_done, lost positions, timed out
        for job in worker.jobs:
            reported = len(job.results)
            n_items = len(job.task.items)
            timed_out: int | None = None
            if job.task_no > run_task or (job.task_no == run_task and run_pos < 0 and reason is not None):
                requeue.append(job)  # never started (or killed by us while decoding): run it elsewhere
                continue
            if job.task_no < run_task or run_pos < 0:
                n_done = n_items  # finished but unreported, or died decoding it: nothing can be trusted
            elif isinstance(reason, tuple) and reason == (job.task_no, run_pos):
                n_done, timed_out = run_pos + 1, run_pos
            elif reason is not None:
                n_done = run_pos  # we killed the worker for another item: this one counts as not started
            else:
                n_done = run_pos + 1
            n_done = max(n_done, reported)
            lost = range(reported, n_done if timed_out is None else timed_out)
            if n_done == 0:
                requeue.append(job)
                continue
            settled.append((job, n_done, lost, timed_out))
        worker.jobs.clear()
        lost_indices = [job.task.start + p for job, _, lost, _ in settled for p in lost]
        died = WorkerDiedError(exitcode, lost_indices, worker.pid) if lost_indices else None
        for job, n_done, lost, timed_out in settled:
            task = job.task
            failures = list(job.failures)
            if died is not None:
                failures.extend(ItemFailure(task.start + p, died) for p in lost)
            if timed_out is not None:
                assert task.item_timeout is not None
                index = task.start + timed_out
                failures.append(ItemFailure(index, ItemTimeoutError(index, task.item_timeout)))
            results = job.results + [None] * (n_done - len(job.results))
            outcome = ChunkOutcome(
                task.chunk_id, task.start, results, tuple(failures), n_done, worker=f"pid:{worker.pid}"
            )
            resolutions.append((job, outcome))
        self.pending.extendleft(reversed(requeue))
        if self.start_failures >= MAX_START_FAILURES:
            self.broken = True
            self._fail_pending_locked(exitcode, worker.pid, resolutions)

    def _fail_pending_locked(
        self, exitcode: int | None, pid: int, resolutions: list[tuple[_Job, ChunkOutcome]]
    ) -> None:
        """Workers die at start-up: fail the queued chunks instead of respawning forever."""
        jobs, self.pending = list(self.pending), deque()
        for job in jobs:
            if not job.running and not job.future.set_running_or_notify_cancel():
                continue
            task = job.task
            indices = range(task.start, task.start + len(task.items))
            died = WorkerDiedError(exitcode, indices, pid)
            if hasattr(died, "add_note"):
                died.add_note(
                    f"{self.start_failures} worker processes in a row died during start-up, before "
                    "running anything: see their output above. With the spawn or forkserver start "
                    "method the main module must be importable and guard its own work with "
                    "`if __name__ == '__main__':`."
                )
            failures = tuple(ItemFailure(i, died) for i in indices)
            resolutions.append(
                (job, ChunkOutcome(task.chunk_id, task.start, [None] * len(indices), failures, len(indices)))
            )

    # -- the manager thread -----------------------------------------------------------------------

    def _manage(self) -> None:
        try:
            self._loop()
        except BaseException as error:
            if self.closed:
                return
            _log.exception("the process backend's manager thread failed; closing the backend")
            self._fail_everything(error)

    def _loop(self) -> None:
        waiter = _Waiter(self.wake_r)
        try:
            self._serve(waiter)
        finally:
            waiter.close()

    def _serve(self, waiter: _Waiter) -> None:
        while True:
            if self.close_requested:
                self.close()
            with self.lock:
                if self.closed:
                    return
                timeout = self._check_timeouts_locked()
                self.untimed_wait = timeout is None
                waiter.sync(self.workers)
            events: list[_Event] = []
            dead: list[_Worker] = []
            for owner, is_pipe in waiter.wait(timeout):
                if owner is None:
                    with self.lock:
                        while self.wake_r.poll():
                            self.wake_r.recv_bytes()
                        self.wake_pending = False
                elif is_pipe:
                    _read(owner, events, drain=False)
                else:
                    dead.append(owner)
            for worker in dead:
                worker.proc.join()  # it has exited (sentinel ready): this only reaps it
                _read(worker, events, drain=True)
            resolutions: list[tuple[_Job, ChunkOutcome]] = []
            with self.lock:
                if self.is_closed():
                    return
                for event in events:
                    self._apply_locked(event, resolutions)
                for worker in dead:
                    waiter.remove(worker)
                    self._bury_locked(worker, resolutions)
                self._dispatch_locked()
            for job, outcome in resolutions:
                job.future.set_result(outcome)
            if dead:
                with self.lock:
                    self._replenish_locked()
                    self._dispatch_locked()

    def _fail_everything(self, error: BaseException) -> None:
        with self.lock:
            jobs = list(self.pending) + [job for worker in self.workers for job in worker.jobs]
            self.pending.clear()
            for worker in self.workers:
                worker.jobs.clear()
        failure = RuntimeError("the process backend's manager thread failed")
        failure.__cause__ = error
        for job in jobs:
            if job.running or job.future.set_running_or_notify_cancel():
                job.future.set_exception(failure)
        self.close()


def _read(worker: _Worker, events: list[_Event], *, drain: bool) -> None:
    """Read and unpickle frames from ``worker``'s result pipe.

    Args:
        worker: the worker; ``worker.eof`` is set when its pipe is closed.
        events: where the decoded frames go.
        drain: read until nothing is left (the worker is dead); otherwise read what one read gets
            (the selector reports the pipe again if more is waiting).
    """
    if worker.eof:
        return
    inbox = worker.inbox
    if inbox is not None:
        while True:
            got = inbox.fill()
            if got == 0:
                worker.eof = True
            inbox.parse(worker, events)
            if not drain or got <= 0:
                return
    conn = worker.results
    try:
        while not drain or conn.poll():
            events.append(_decode(worker, conn.recv_bytes()))
            if not drain:
                return
    except (EOFError, OSError):
        worker.eof = True


def _decode(worker: _Worker, frame: bytes | memoryview) -> _Event:
    """One worker frame as an event; a body that cannot be unpickled travels as the event's error."""
    kind, task_no, pos = _worker.HEADER.unpack_from(frame)
    try:
        return (worker, kind, task_no, pos, pickle.loads(frame[_worker.HEADER.size :]), None)
    except Exception as error:
        # Without its traceback the error holds no frame, hence no view on the inbox's buffer.
        return (worker, kind, task_no, pos, None, error.with_traceback(None))


def _unsendable(task: ChunkTask, error: BaseException) -> ChunkOutcome:
    """The outcome of a chunk whose items or function cannot be pickled: every item fails."""
    failure = pickle.PicklingError(
        f"chunk {task.chunk_id} (items {task.start}..{task.start + len(task.items) - 1}) cannot be sent to "
        f"a worker process: {type(error).__name__}: {error}; make the function and the items picklable "
        "(module-level functions, plain data) or run on threads"
    )
    failure.__cause__ = error
    n_items = len(task.items)
    failures = tuple(ItemFailure(task.start + p, failure) for p in range(n_items))
    return ChunkOutcome(task.chunk_id, task.start, [None] * n_items, failures, n_items)


def _stop_processes(procs: list[BaseProcess]) -> None:
    """Join processes told to stop; SIGTERM, then SIGKILL, those that do not exit in time; reap all."""
    deadline = time.monotonic() + CLOSE_GRACE
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
    late = [proc for proc in procs if proc.exitcode is None]
    for proc in late:
        proc.terminate()
    deadline = time.monotonic() + TERMINATE_GRACE
    for proc in late:
        proc.join(max(0.0, deadline - time.monotonic()))
    for proc in late:
        if proc.exitcode is None:
            proc.kill()
            proc.join()
    for proc in procs:
        proc.close()


class ProcessBackend(ClosingContext):
    """Runs chunks in ``n_workers`` worker processes; survives worker deaths and item timeouts.

    Workers start in the constructor (call :meth:`wait_ready` to wait for them) and are replaced as
    soon as one dies. Use it as a context manager or call :meth:`close`; a backend left open is
    closed when it is garbage collected or at interpreter exit, and workers whose parent was killed
    exit by themselves within ``ORPHAN_CHECK_INTERVAL`` (1 s). Workers ignore SIGINT: on Ctrl-C the
    caller aborts or closes the backend.

    With ``fork``, replacement workers are forked from a process that runs threads (the manager's,
    the caller's); a function that takes a lock another thread held at that instant (``print`` from
    several threads, ``logging``) can hang in the worker. Prefer ``forkserver`` or ``spawn`` there.

    Args:
        n_workers: how many worker processes (>= 1).
        start_method: ``"fork"``, ``"forkserver"`` or ``"spawn"``; None: multiprocessing's default.
        blas_threads: cap on BLAS/OpenMP threads inside each worker (threadpoolctl, and the
            ``*_NUM_THREADS`` variables for libraries loaded later); None leaves them alone.

    Raises:
        ConfigurationError: a bad ``n_workers``, ``start_method`` or ``blas_threads``.
    """

    kind: ExecutorKind = "processes"

    def __init__(self, n_workers: int, *, start_method: str | None = None, blas_threads: int | None = None):
        if n_workers < 1:
            raise ConfigurationError(f"n_workers must be >= 1 (got {n_workers})")
        if blas_threads is not None and blas_threads < 1:
            raise ConfigurationError(f"blas_threads must be None or >= 1 (got {blas_threads})")
        methods = multiprocessing.get_all_start_methods()
        if start_method is not None and start_method not in methods:
            raise ConfigurationError(
                f"start_method must be one of {', '.join(methods)} or None (got {start_method!r})"
            )
        ctx = multiprocessing.get_context(start_method)
        #: The start method the workers were started with.
        self.start_method: str = ctx.get_start_method()
        #: The BLAS thread cap in the workers, or None.
        self.blas_threads = blas_threads
        self._pool = _Pool(n_workers, ctx, blas_threads)
        self._finalizer = multiprocessing.util.Finalize(self, self._pool.finalize, exitpriority=EXIT_PRIORITY)

    @property
    def n_workers(self) -> int:
        """How many chunks can run at the same time."""
        return self._pool.n_workers

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._pool.closed

    @property
    def ready_workers(self) -> int:
        """Workers started and ready to run (busy or not)."""
        with self._pool.lock:
            return sum(1 for w in self._pool.workers if w.ready and not w.dying)

    @property
    def idle_workers(self) -> int:
        """Workers ready and holding no chunk: what a new run gets without start-up cost."""
        with self._pool.lock:
            return sum(1 for w in self._pool.workers if w.ready and not w.dying and not w.jobs)

    def worker_pids(self) -> list[int]:
        """The pids of the current worker processes."""
        with self._pool.lock:
            return [w.pid for w in self._pool.workers]

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until all workers have started.

        Args:
            timeout: seconds to wait at most; None: no limit.

        Returns:
            True when all ``n_workers`` are ready, False on timeout or when the backend is closed.
        """
        return self._pool.wait_ready(timeout)

    def submit(self, task: ChunkTask) -> Future[ChunkOutcome]:
        """Queue one chunk; a free worker gets it at once, otherwise the first to become free.

        Args:
            task: the chunk. ``task.func.payload`` is sent once per worker; a reference made with
                ``FunctionRef.local`` is pickled here.

        Returns:
            A future that resolves with the chunk's outcome. It is cancelled (``result()`` raises
            ``CancelledError``) when the backend is closed, or aborted before the chunk finished.
        """
        return self._pool.submit(task)

    def abort(self) -> None:
        """Kill busy workers, cancel their chunks and the queued ones, start replacements.

        Idle workers are kept; the backend stays usable.
        """
        self._pool.abort()

    def close(self) -> None:
        """Cancel outstanding chunks, stop all workers and the manager thread. Idempotent.

        Idle workers get a stop message and CLOSE_GRACE seconds; busy ones are killed. Every worker
        is reaped: no zombie is left behind.
        """
        self._finalizer.cancel()
        self._pool.close()

    def __repr__(self) -> str:
        return (
            f"ProcessBackend(n_workers={self.n_workers}, start_method={self.start_method!r}, "
            f"blas_threads={self.blas_threads}, closed={self.closed})"
        )
