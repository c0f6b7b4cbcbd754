"""The small protocol every backend implements, and the values that cross it.

A backend runs *chunks* (consecutive items of the input) and nothing more: mapping, ordering,
chunk-size adaptation, retries, error policy and progress live in the runner.

::

    runner ──submit(ChunkTask)──► backend ──► worker(s): for item in chunk: func(item)
       ▲                                             │
       └──── Future[ChunkOutcome] (always resolves) ◄┘

Contract (checked by ``tests/run/test_contract.py`` for every backend):

- ``submit`` returns a ``concurrent.futures.Future`` that *always* resolves with a
  :class:`ChunkOutcome`; item exceptions, item timeouts and worker deaths are reported inside it as
  :class:`ItemFailure` entries, never raised from the future. The future raises only if the backend
  itself was closed or aborted before the chunk ran (``concurrent.futures.CancelledError``).
- ``outcome.results[i]`` is the result of ``task.items[i]`` for ``i < outcome.n_done``; failed
  positions hold None and have an entry in ``outcome.failures``. Items at ``n_done`` and after were
  never started (the chunk stopped early because ``stop_on_error`` was set or an item timed out):
  the runner may resubmit them without running anything twice.
- A worker that dies (signal, segfault, ``os._exit``) fails every item it held and had not
  reported, each with the same :class:`~amorsize.errors.WorkerDiedError` naming all of them; the
  backend replaces the worker and stays usable.
- ``item_timeout``: an item still running after that many seconds is failed with
  :class:`~amorsize.errors.ItemTimeoutError`; a process backend kills and replaces the worker.
- ``abort()`` stops all work now (kills busy process workers, cancels queued chunks) and leaves the
  backend usable for a later run; ``close()`` releases everything and is idempotent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

import cloudpickle

from amorsize.core.types import ExecutorKind

__all__ = [
    "Backend",
    "ChunkOutcome",
    "ChunkTask",
    "FunctionRef",
    "ItemFailure",
]


@dataclass(frozen=True, eq=False)
class FunctionRef:
    """The user's function, pickled once per run so process backends ship it once per worker.

    Attributes:
        func: the callable itself (serial and thread backends call it directly).
        payload: ``cloudpickle.dumps(func)``.
        key: a digest of ``payload``; workers cache the unpickled function under it.
    """

    func: Callable[[Any], Any]
    payload: bytes
    key: str

    @classmethod
    def create(cls, func: Callable[[Any], Any]) -> FunctionRef:
        """Pickle ``func`` (cloudpickle, so lambdas and closures work) and digest it.

        Raises:
            pickle.PicklingError, TypeError, AttributeError: when ``func`` cannot be pickled at all.
        """
        payload = cloudpickle.dumps(func)
        return cls(func=func, payload=payload, key=hashlib.blake2b(payload, digest_size=16).hexdigest())

    @classmethod
    def local(cls, func: Callable[[Any], Any]) -> FunctionRef:
        """A reference for in-process backends only (serial, threads): nothing is pickled."""
        return cls(func=func, payload=b"", key=f"local-{id(func)}")


@dataclass(frozen=True)
class ChunkTask:
    """Consecutive items to run, and how.

    Attributes:
        chunk_id: unique within a run.
        start: input position of ``items[0]``.
        items: the items.
        func: the function to call on each item.
        stop_on_error: stop the chunk at the first failing item (the rest are not started).
        item_timeout: seconds one item may run, or None.
    """

    chunk_id: int
    start: int
    items: Sequence[Any]
    func: FunctionRef
    stop_on_error: bool = True
    item_timeout: float | None = None


@dataclass(frozen=True)
class ItemFailure:
    """One item that did not produce a result.

    Attributes:
        index: input position of the item.
        error: the exception. For an exception raised by ``func`` in another process it is the
            original exception, unpickled, with the worker's traceback text as ``__cause__``
            (a ``RemoteTraceback``). For a death or timeout it is a ``WorkerDiedError`` or
            ``ItemTimeoutError``.
        traceback: the formatted traceback text from where it was raised.
    """

    index: int
    error: BaseException
    traceback: str = ""


@dataclass(frozen=True)
class ChunkOutcome:
    """What became of one chunk.

    Attributes:
        chunk_id: the task's id.
        start: the task's start.
        results: one entry per attempted item (``len(results) == n_done``); None where it failed.
        failures: the items that failed, in order.
        n_done: how many items (from the start of the chunk) were attempted.
        duration: wall seconds the worker spent on the chunk.
        cpu_time: CPU seconds the worker spent on the chunk (0.0 when unknown).
        worker: an id of the worker that ran it (e.g. ``"pid:1234"`` or ``"thread:3"``).
    """

    chunk_id: int
    start: int
    results: list[Any]
    failures: tuple[ItemFailure, ...] = ()
    n_done: int = 0
    duration: float = 0.0
    cpu_time: float = 0.0
    worker: str = ""


@runtime_checkable
class Backend(Protocol):
    """Runs chunks. See the module docstring for the contract."""

    kind: ExecutorKind

    @property
    def n_workers(self) -> int:
        """How many chunks can run at the same time."""
        ...

    def submit(self, task: ChunkTask) -> Future[ChunkOutcome]:
        """Queue one chunk; the future resolves with its outcome."""
        ...

    def abort(self) -> None:
        """Stop all running and queued work now; the backend stays usable."""
        ...

    def close(self) -> None:
        """Release workers and resources. Idempotent."""
        ...

    def __enter__(self) -> Backend: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
