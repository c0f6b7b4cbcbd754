"""The Dask backend: each chunk runs as one task on a Dask ``distributed`` cluster.

The cluster is the user's: a ``distributed.Client`` they pass, the current default client, or a
scheduler address (then this backend makes the client and closes it in :meth:`DaskBackend.close`).

::

    runner thread                      client event loop (distributed)      Dask workers
    ─────────────                      ───────────────────────────────      ────────────
    submit(task):                                                           run_chunk(function,
      pickle items (here, so an          client.submit(run_chunk, …,          key, items, …):
      unpicklable item fails its         key=amorsize-chunk-…, pure=False)    load func (cache by
      chunk at once)            ───────────────────────────────────────►      key), for item in
      function: inline bytes, or                                              items: func(item),
      scattered once (≥ SCATTER_         as_completed ◄── task done ──────    stop_on_error, time
      THRESHOLD, broadcast)                   │                               it; pickle the reply
      ┌ lock ─────────────────┐               ▼                               (bytes)
      │ jobs[key] = job       │      manager thread (one per backend):
      │ as_completed.add(f)   │        next batch of done tasks
      └───────────────────────┘        ┌ lock: claim their jobs ┐
    Future[ChunkOutcome] ◄──────────   └────────────────────────┘
      resolved by the manager          gather the batch (one round trip), unpickle,
                                       build ChunkOutcome, resolve — outside the lock

Contract (:mod:`amorsize.run.backend`) on Dask:

- A chunk is one Dask task, so the per-task cost of Dask (a few milliseconds through the scheduler,
  measured by :mod:`amorsize.measure.cluster`) is paid once per chunk, not once per item. Task keys
  are unique (``pure=False``): two identical chunks are two tasks, never deduplicated.
- Item exceptions are caught in the worker and come back inside the outcome, with the worker's
  traceback text as a ``RemoteTraceback`` cause, exactly as from a process worker.
- A worker that dies (SIGKILL, out-of-memory kill by its nanny, a segfault): Dask reruns the chunks
  it held on another worker, whole, so each item's result is still reported exactly once (an item may
  have *run* twice: functions with side effects should be idempotent, as always on Dask). Only a chunk
  whose workers die ``distributed.scheduler.allowed-failures`` + 1 times (Dask's ``KilledWorker``, e.g.
  an item that kills every worker it runs on) is reported failed: all its items, with one
  :class:`~amorsize.errors.WorkerDiedError`.
- ``item_timeout``: a thread cannot be killed, and killing a Dask worker process is not ours to do
  on someone's cluster. So a chunk with a timeout runs its items on a helper thread inside the task,
  and the task waits for each item at most ``item_timeout``: on expiry it returns at once with the
  results before the item and :class:`~amorsize.errors.ItemTimeoutError` for it (the rest of the
  chunk is left for the runner to resubmit). The helper thread is *abandoned* in the worker and runs
  the item to its end there, like the thread backend's; the Dask thread slot is free again at once.
- ``abort()`` cancels every task of this backend (queued ones never run; a running one finishes in
  the worker, its result is dropped) and resolves their futures with ``CancelledError``. ``close()``
  also releases the scattered functions and, only if this backend created the client, closes it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pickle
import threading
import time
import traceback
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

import cloudpickle

from amorsize._closing import ClosingContext
from amorsize.core.types import ExecutorKind
from amorsize.errors import ConfigurationError, ItemTimeoutError, MissingExtraError, WorkerDiedError
from amorsize.run import _worker
from amorsize.run.backend import ChunkOutcome, ChunkTask, FunctionRef, ItemFailure

# The process backend's decoding of a worker's encoded error (the same encoding is used here).
from amorsize.run.backends.processes import _rebuild

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["DaskBackend", "connect", "import_distributed", "run_chunk"]

_log = logging.getLogger(__name__)

#: A function payload (the cloudpickled function with what its closure holds) at least this large is
#: scattered to the workers once (``broadcast=True``) instead of travelling inside every task. On the
#: 2-core dev VM a 2-worker LocalCluster moved 100–290 MB/s and took 2.2–3.6 ms per task in a burst
#: (benchmarks/bench_dask.py, several runs); 64 KiB inline then adds 0.2–0.6 ms, a tenth to a fifth of
#: the per-task cost, while a scatter costs a round trip (~10 ms there) once.
SCATTER_THRESHOLD = 64 * 2**10

#: Functions kept per backend (client side: their scattered copies) and per worker process (unpickled).
#: The same figure, and the same reason, as the process backend's FUNCTION_CACHE_SIZE: one run uses
#: one function; 8 covers a backend alternating between several.
FUNCTION_CACHE_SIZE = 8

#: Seconds a task with ``item_timeout`` waits for its helper thread to pick up the first item before
#: looking again (the thread starts in ~0.1 ms; this only bounds a lost wake-up).
TIMEOUT_POLL = 0.05

#: Seconds the manager thread waits for new work before checking again whether it was closed
#: (it is woken at once on submit and close; this only bounds a lost wake-up).
IDLE_WAIT = 0.5

#: Seconds ``close()`` waits for the manager thread; it leaves within one gather round trip
#: (milliseconds on a healthy cluster), and is a daemon thread if the cluster hangs.
MANAGER_JOIN_TIMEOUT = 5.0


def import_distributed() -> ModuleType:
    """Import ``distributed``, or say which extra installs it.

    Returns:
        The ``distributed`` module.

    Raises:
        MissingExtraError: ``distributed`` is not installed (``pip install 'amorsize[dask]'``).
    """
    try:
        import distributed
    except ImportError as error:
        raise MissingExtraError("the Dask backend", "dask", "distributed") from error
    return distributed


def connect(client: Client | str | None) -> tuple[Any, bool]:
    """The Dask client to run on, and whether the caller must close it.

    Args:
        client: a ``distributed.Client`` (used as it is), a scheduler address such as
            ``"tcp://127.0.0.1:8786"`` (a new client is connected, not made the default), or None
            for the current default client (``distributed.default_client()``).

    Returns:
        ``(client, owned)``: ``owned`` is True when the client was created here.

    Raises:
        MissingExtraError: ``distributed`` is not installed.
        ConfigurationError: no default client exists, the address cannot be reached, or ``client``
            is of another type.
    """
    distributed = import_distributed()
    if client is None:
        try:
            return distributed.default_client(), False
        except ValueError as error:
            raise ConfigurationError(
                "the Dask backend found no Dask client: pass client=distributed.Client(...) or a "
                "scheduler address such as 'tcp://127.0.0.1:8786', or create a Client first (the "
                "latest one becomes the default)"
            ) from error
    if isinstance(client, str):
        try:
            made = distributed.Client(client, set_as_default=False)
        except (OSError, TimeoutError) as error:
            raise ConfigurationError(
                f"could not connect to the Dask scheduler at {client!r} ({type(error).__name__}: "
                f"{error}); is the scheduler running and is the address reachable from here?"
            ) from error
        return made, True
    if isinstance(client, distributed.Client):
        if client.asynchronous:
            raise ConfigurationError(
                "the Dask backend needs a synchronous Client (got one made with asynchronous=True); "
                "create it with distributed.Client(address) instead"
            )
        return client, False
    raise ConfigurationError(
        f"client must be a distributed.Client, a scheduler address string or None "
        f"(got {type(client).__name__})"
    )


# -- worker side -----------------------------------------------------------------------------------

#: Unpickled functions in this worker process, by key (a digest of the payload). Module state because
#: a Dask task has nowhere else to keep it between tasks; bounded and locked (worker threads share it).
_FUNCTIONS: OrderedDict[str, Callable[[Any], Any]] = OrderedDict()
_FUNCTIONS_LOCK = threading.Lock()

#: The reply of :func:`run_chunk`, pickled: (results, failures as (position, encoded error), n_done,
#: duration, cpu_time, worker id, position of the item that timed out or None, chunk error or None).
_Reply = tuple[list[Any], list[tuple[int, _worker.EncodedError]], int, float, float, str, int | None, Any]


def _load(key: str, payload: bytes) -> Callable[[Any], Any]:
    with _FUNCTIONS_LOCK:
        cached = _FUNCTIONS.get(key)
        if cached is not None:
            _FUNCTIONS.move_to_end(key)
            return cached
    func: Callable[[Any], Any] = pickle.loads(payload)
    with _FUNCTIONS_LOCK:
        _FUNCTIONS[key] = func
        while len(_FUNCTIONS) > FUNCTION_CACHE_SIZE:
            _FUNCTIONS.popitem(last=False)
    return func


def _worker_id() -> str:
    try:
        from distributed import get_worker

        return f"dask:{get_worker().address}"
    except (ImportError, ValueError):  # not inside a Dask worker (tests call run_chunk directly)
        return f"pid:{os.getpid()}"


class _Items:
    """The item loop of one chunk; run inline, or on a helper thread when items have a timeout."""

    def __init__(self, func: Callable[[Any], Any], items: Sequence[Any], stop_on_error: bool) -> None:
        self.func = func
        self.items = items
        self.stop_on_error = stop_on_error
        self.results: list[Any] = []
        self.failures: list[tuple[int, _worker.EncodedError]] = []
        self.n_done = 0
        self.cpu_time = 0.0
        self.changed = threading.Condition()
        self.position = -1  # the item running now (-1: not started)
        self.item_started = 0.0
        self.finished = False
        self.abandoned = False

    def run(self) -> None:
        """Call the function on each item (stops early on an error with ``stop_on_error``).

        Once abandoned (its item ran over time) it records nothing more and stops after that item.
        """
        cpu_started = time.thread_time()
        changed = self.changed
        for pos, item in enumerate(self.items):
            with changed:
                self.position, self.item_started, self.n_done = pos, time.monotonic(), pos + 1
                changed.notify_all()
            try:
                result = self.func(item)
            except BaseException as error:  # SystemExit and KeyboardInterrupt raised by an item fail it
                encoded = _worker.encode_error(error)
                del error
                with changed:
                    if self.abandoned:
                        return
                    self.results.append(None)
                    self.failures.append((pos, encoded))
                if self.stop_on_error:
                    break
                continue
            with changed:
                if self.abandoned:
                    return
                self.results.append(result)
        with changed:
            self.cpu_time = time.thread_time() - cpu_started
            self.finished = True
            changed.notify_all()

    def run_with_timeout(self, timeout: float) -> int | None:
        """Run the items on a helper thread, waiting for each at most ``timeout`` seconds.

        Returns:
            None when every item ended in time; else the position of the item that ran over time:
            the helper thread is abandoned, the results after that position are dropped and a None
            stands for it.
        """
        helper = threading.Thread(target=self.run, name="amorsize-dask-item", daemon=True)
        helper.start()
        with self.changed:
            while not self.finished:
                if self.position < 0:
                    self.changed.wait(TIMEOUT_POLL)
                    continue
                remaining = self.item_started + timeout - time.monotonic()
                if remaining <= 0:
                    self.abandoned = True
                    pos = self.position
                    self.results.append(None)
                    self.n_done = pos + 1
                    self.cpu_time = 0.0
                    return pos
                self.changed.wait(remaining)
        return None


def run_chunk(
    function: bytes,
    key: str,
    items_blob: bytes,
    start: int,
    stop_on_error: bool,
    item_timeout: float | None,
) -> bytes:
    """Run one chunk inside a Dask worker; the task function of :class:`DaskBackend`.

    Mirrors the process worker's per-item loop (:mod:`amorsize.run._worker`): failures are encoded
    with their traceback text, the chunk stops at the first one with ``stop_on_error``, and the
    whole reply is pickled here so that a result that cannot be pickled fails only its own item.

    Args:
        function: the cloudpickled function (scattered or inline).
        key: a digest of ``function``; the unpickled function is cached in the worker under it.
        items_blob: the chunk's items, pickled.
        start: input position of the first item (for error messages).
        stop_on_error: stop at the first failing item.
        item_timeout: seconds one item may run, or None (see the module docstring).

    Returns:
        The pickled reply (see ``_Reply``).
    """
    started = time.perf_counter()
    worker = _worker_id()
    try:
        func = _load(key, function)
        items = pickle.loads(items_blob)
    except BaseException as error:
        reply: _Reply = (
            [],
            [],
            0,
            time.perf_counter() - started,
            0.0,
            worker,
            None,
            _worker.encode_error(error),
        )
        return _worker.dumps(reply)
    loop = _Items(func, items, stop_on_error)
    timed_out = None
    if item_timeout is None:
        loop.run()
    else:
        timed_out = loop.run_with_timeout(item_timeout)
    results, failures, n_done, cpu_time = loop.results, loop.failures, loop.n_done, loop.cpu_time
    reply = (results, failures, n_done, time.perf_counter() - started, cpu_time, worker, timed_out, None)
    try:
        return _worker.dumps(reply)
    except Exception:
        pass
    for pos, result in enumerate(results):
        try:
            _worker.dumps(result)
        except Exception as error:
            results[pos] = None
            failures.append((pos, _worker.encode_error(_unpicklable_result(start + pos, result, error))))
    failures.sort(key=lambda failure: failure[0])
    reply = (results, failures, n_done, time.perf_counter() - started, cpu_time, worker, timed_out, None)
    return _worker.dumps(reply)


def _unpicklable_result(index: int, result: Any, error: BaseException) -> pickle.PicklingError:
    kind = type(result)
    failure = pickle.PicklingError(
        f"the result of item {index} is a {kind.__module__}.{kind.__qualname__}, which cannot be "
        f"pickled to send it back from the Dask worker ({type(error).__name__}: {error}); "
        "return plain data instead (built-in types or numpy arrays)"
    )
    failure.__cause__ = error
    return failure


# -- client side -----------------------------------------------------------------------------------


def _failed(task: ChunkTask, error: BaseException, text: str = "", worker: str = "") -> ChunkOutcome:
    """The outcome of a chunk none of whose items produced a result: each fails with ``error``."""
    n_items = len(task.items)
    failures = tuple(ItemFailure(task.start + p, error, text) for p in range(n_items))
    return ChunkOutcome(task.chunk_id, task.start, [None] * n_items, failures, n_items, worker=worker)


def _unsendable(task: ChunkTask, error: BaseException) -> ChunkOutcome:
    failure = pickle.PicklingError(
        f"chunk {task.chunk_id} (items {task.start}..{task.start + len(task.items) - 1}) cannot be sent "
        f"to the Dask cluster: {type(error).__name__}: {error}; make the function and the items "
        "picklable (module-level functions, plain data) or run on threads"
    )
    failure.__cause__ = error
    return _failed(task, failure)


def _died(task: ChunkTask, error: BaseException) -> ChunkOutcome:
    """Dask gave up on the chunk after its workers kept dying (``KilledWorker``)."""
    indices = range(task.start, task.start + len(task.items))
    died = WorkerDiedError(None, indices)
    shown = ", ".join(str(i) for i in list(indices)[:10]) + (", …" if len(indices) > 10 else "")
    last = getattr(getattr(error, "last_worker", None), "address", "?")
    tries = getattr(error, "allowed_failures", None)
    attempts = f"{tries + 1} Dask workers" if isinstance(tries, int) else "Dask workers"
    died.args = (
        f"{attempts} died while running items [{shown}] (the last was {last}); Dask reruns a chunk "
        "after a worker death up to distributed.scheduler.allowed-failures times, then gives up. Likely "
        "causes: the worker's memory limit (its nanny kills it), a crash in a C extension, an external "
        "kill, or an item that brings down any worker it runs on",
    )
    died.__cause__ = error
    return _failed(task, died, worker=f"dask:{last}")


def _decoded(task: ChunkTask, blob: Any) -> ChunkOutcome:
    """The outcome from a worker's pickled reply."""
    start = task.start
    try:
        reply: _Reply = pickle.loads(blob)
        results, failures, n_done, duration, cpu_time, worker, timed_out, chunk_error = reply
    except Exception as undecodable:
        failure = pickle.UnpicklingError(
            f"the outcome of items {start}..{start + len(task.items) - 1} came back from the Dask worker "
            f"but cannot be unpickled here ({type(undecodable).__name__}: {undecodable}); is every class "
            "it uses importable in this process?"
        )
        failure.__cause__ = undecodable
        return _failed(task, failure)
    if chunk_error is not None:
        error, text = _rebuild(chunk_error)
        outcome = _failed(task, error, text, worker)
        return ChunkOutcome(
            outcome.chunk_id, start, outcome.results, outcome.failures, outcome.n_done, duration, 0.0, worker
        )
    item_failures = [ItemFailure(start + pos, *_rebuild(encoded)) for pos, encoded in failures]
    if timed_out is not None:
        assert task.item_timeout is not None
        index = start + timed_out
        late = ItemTimeoutError(index, task.item_timeout)
        if hasattr(late, "add_note"):
            late.add_note(
                "On Dask the item is abandoned, not stopped: its thread in worker "
                f"{worker.removeprefix('dask:')} runs it to its end."
            )
        item_failures.append(ItemFailure(index, late))
    return ChunkOutcome(
        task.chunk_id, start, results, tuple(item_failures), n_done, duration, cpu_time, worker
    )


@dataclass(eq=False)
class _Job:
    """One submitted chunk: the task, the caller's future and the Dask future running it."""

    task: ChunkTask
    future: Future[ChunkOutcome]
    remote: Any  # distributed.Future


@dataclass(frozen=True, eq=False)
class _Shipped:
    """A function as the workers receive it: its payload bytes inline, or the scattered copy."""

    func: Callable[[Any], Any]
    payload: Any  # bytes, or a distributed.Future of the bytes
    key: str


class DaskBackend(ClosingContext):
    """Runs chunks as tasks on a Dask cluster; see the module docstring for the contract on Dask.

    Example (a throw-away cluster on this machine)::

        from distributed import Client, LocalCluster
        with LocalCluster(n_workers=2, threads_per_worker=1) as cluster, Client(cluster) as client:
            with DaskBackend(client) as backend:
                runner = Runner(backend, func, data, chunksize=16)
                results = list(runner)

    Args:
        client: a ``distributed.Client``, a scheduler address (the backend connects and closes that
            client on :meth:`close`), or None for the current default client.

    Raises:
        MissingExtraError: ``distributed`` is not installed.
        ConfigurationError: no client to use (see :func:`connect`).
    """

    kind: ExecutorKind = "dask"

    def __init__(self, client: Client | str | None = None) -> None:
        distributed = import_distributed()
        self._client: Any
        self._client, self._owns_client = connect(client)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._jobs: dict[str, _Job] = {}
        self._functions: OrderedDict[str, _Shipped] = OrderedDict()
        self._completed = distributed.as_completed(loop=self._client.loop)
        self._closed = False
        self._last_n_workers = 1
        self._manager = threading.Thread(target=self._manage, name="amorsize-dask-manager", daemon=True)
        self._manager.start()

    @property
    def client(self) -> Any:
        """The Dask client this backend submits to."""
        return self._client

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    @property
    def n_workers(self) -> int:
        """Worker threads across the cluster's workers now (at least 1); asks the scheduler."""
        if not self._closed:
            try:
                self._last_n_workers = max(1, sum(self._client.nthreads().values()))
            except Exception as error:  # the cluster is unreachable: keep the last figure
                _log.debug("could not ask the Dask scheduler for its workers: %r", error)
        return self._last_n_workers

    def submit(self, task: ChunkTask) -> Future[ChunkOutcome]:
        """Send one chunk to the cluster as one task.

        Args:
            task: the chunk.

        Returns:
            A future resolved with the chunk's outcome; cancelled if the backend is closed, or
            resolved with ``CancelledError`` if it is aborted or closed before the chunk finished.
        """
        future: Future[ChunkOutcome] = Future()
        if self._closed:
            future.cancel()
            return future
        future.set_running_or_notify_cancel()
        items = task.items if isinstance(task.items, list) else list(task.items)
        if not items:
            future.set_result(ChunkOutcome(task.chunk_id, task.start, [], (), 0))
            return future
        try:
            items_blob = _worker.dumps(items)
            shipped = self._ship(task.func)
        except Exception as error:
            future.set_result(_unsendable(task, error))
            return future
        key = f"amorsize-chunk-{task.chunk_id}-{uuid.uuid4().hex}"
        with self._lock:
            if self._is_closed():  # closed by another thread meanwhile
                future.set_exception(CancelledError())
                return future
            try:
                remote = self._client.submit(
                    run_chunk,
                    shipped.payload,
                    shipped.key,
                    items_blob,
                    task.start,
                    task.stop_on_error,
                    task.item_timeout,
                    key=key,
                    pure=False,
                )
            except Exception as error:  # the client is closed or lost its scheduler
                future.set_result(_failed(task, error))
                return future
            self._jobs[key] = _Job(task, future, remote)
            self._completed.add(remote)
            self._wake.notify()
        return future

    def abort(self) -> None:
        """Cancel every task of this backend; their futures resolve with ``CancelledError``.

        A task already running finishes in its worker (a thread cannot be stopped); its result is dropped.
        """
        with self._lock:
            jobs = list(self._jobs.values())
            self._jobs.clear()
        self._cancel(jobs)

    def close(self) -> None:
        """Abort, release the scattered functions, stop the manager thread; close the client if ours.

        Idempotent. A client passed in by the caller is left open.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            jobs = list(self._jobs.values())
            self._jobs.clear()
            shipped = list(self._functions.values())
            self._functions.clear()
            self._wake.notify_all()
        self._cancel(jobs)
        self._completed.clear()
        for function in shipped:
            if not isinstance(function.payload, bytes):
                with contextlib.suppress(Exception):
                    function.payload.release()
        if threading.current_thread() is not self._manager:
            self._manager.join(MANAGER_JOIN_TIMEOUT)
        if self._owns_client:
            with contextlib.suppress(Exception):
                self._client.close()

    def __repr__(self) -> str:
        address = getattr(getattr(self._client, "scheduler", None), "address", "?")
        return f"DaskBackend(scheduler={address!r}, owns_client={self._owns_client}, closed={self._closed})"

    # -- internals ------------------------------------------------------------------------------

    def _is_closed(self) -> bool:
        # a method, so that type checkers do not narrow ``_closed`` between two reads
        return self._closed

    def _ship(self, ref: FunctionRef) -> _Shipped:
        """The function as the tasks carry it: inline bytes, or scattered once when large."""
        cache_key = ref.key if ref.payload else f"local-{id(ref.func)}"
        with self._lock:
            cached = self._functions.get(cache_key)
            if cached is not None and cached.func is ref.func:
                self._functions.move_to_end(cache_key)
                return cached
        payload: bytes = ref.payload or cloudpickle.dumps(ref.func, protocol=5)
        key = ref.key if ref.payload else hashlib.blake2b(payload, digest_size=16).hexdigest()
        shipped_payload: Any = payload
        if len(payload) >= SCATTER_THRESHOLD:
            shipped_payload = self._client.scatter(payload, broadcast=True, hash=False)
        shipped = _Shipped(ref.func, shipped_payload, key)
        evicted: list[_Shipped] = []
        with self._lock:
            self._functions[cache_key] = shipped
            while len(self._functions) > FUNCTION_CACHE_SIZE:
                evicted.append(self._functions.popitem(last=False)[1])
        for old in evicted:  # tasks still waiting for it keep it alive on the scheduler
            if not isinstance(old.payload, bytes):
                with contextlib.suppress(Exception):
                    old.payload.release()
        return shipped

    def _cancel(self, jobs: list[_Job]) -> None:
        if not jobs:
            return
        with contextlib.suppress(Exception):  # a closed client has nothing left to cancel
            self._client.cancel([job.remote for job in jobs], reason="amorsize run aborted")
        for job in jobs:
            job.future.set_exception(CancelledError())

    def _manage(self) -> None:
        try:
            while self._serve_once():
                pass
        except BaseException as error:  # pragma: no cover - a bug here must not hang the runner
            if self._closed:
                return
            _log.exception("the Dask backend's manager thread failed; its chunks fail")
            with self._lock:
                jobs = list(self._jobs.values())
                self._jobs.clear()
            for job in jobs:
                job.future.set_result(_failed(job.task, error))

    def _serve_once(self) -> bool:
        """Wait for finished tasks and resolve their futures; False once closed."""
        with self._lock:
            if not self._jobs and not self._closed:
                self._wake.wait(IDLE_WAIT)
            if self._closed:
                return False
            if not self._jobs:
                return True
        try:
            done = self._completed.next_batch(block=True)
        except StopIteration:  # everything tracked was claimed (aborted) meanwhile
            return True
        with self._lock:
            claimed = [(remote, job) for remote in done if (job := self._jobs.pop(remote.key, None))]
        finished = [remote for remote, _ in claimed if remote.status == "finished"]
        blobs: dict[str, Any] = {}
        if finished:
            try:
                blobs = dict(zip([r.key for r in finished], self._client.gather(finished), strict=True))
            except Exception as error:
                _log.debug("gathering %d chunks failed (%r); gathering them one by one", len(finished), error)
        for remote, job in claimed:
            job.future.set_result(self._outcome(job, remote, blobs))
        return True

    def _outcome(self, job: _Job, remote: Any, blobs: dict[str, Any]) -> ChunkOutcome:
        """The outcome of one finished, failed or cancelled task."""
        task = job.task
        if remote.key in blobs:
            return _decoded(task, blobs[remote.key])
        try:
            blob = remote.result()
        except BaseException as error:
            if type(error).__name__ == "KilledWorker":
                return _died(task, error)
            if isinstance(error, CancelledError) or remote.cancelled():
                cancelled = RuntimeError(
                    f"the Dask cluster cancelled chunk {task.chunk_id} (items {task.start}.."
                    f"{task.start + len(task.items) - 1}): the client lost its scheduler, or another "
                    "client cancelled the task"
                )
                cancelled.__cause__ = error
                return _failed(task, cancelled)
            if (
                isinstance(error, ModuleNotFoundError)
                and error.name == "amorsize"
                and hasattr(error, "add_note")
            ):
                error.add_note("Install amorsize (this same version) where the Dask workers run.")
            return _failed(task, error, "".join(traceback.format_exception(error)))
        return _decoded(task, blob)
