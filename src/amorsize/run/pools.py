"""Backends kept warm between runs, so a second ``execute()`` does not pay worker start-up again.

    >>> with get_pool("threads", 2) as backend:   # a lease: close() gives the backend back
    ...     backend.n_workers
    2
    >>> warm_workers()["threads"] >= 2            # the idle threads now count as warm
    True

One :class:`PoolCache` holds the idle backends, at most one per configuration
(kind, workers, start method, BLAS cap). :func:`get_pool` takes the matching idle backend out of
the cache (or creates one) and wraps it in a :class:`PooledBackend` lease; closing the lease puts
the backend back. A backend is never shared by two runs at once: while leased it is not in the
cache, and a second concurrent run with the same configuration gets a fresh backend (the surplus one
is closed when given back).

The module has one default cache, closed at interpreter exit; :func:`get_pool`, :func:`lease`,
:func:`warm_workers` and :func:`shutdown_pools` use it.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections import OrderedDict
from concurrent.futures import Future

from amorsize._closing import ClosingContext
from amorsize.core.types import ExecutorKind
from amorsize.errors import ConfigurationError
from amorsize.measure.machine import default_start_method
from amorsize.run.backend import Backend, ChunkOutcome, ChunkTask
from amorsize.run.backends.processes import ProcessBackend
from amorsize.run.backends.serial import SerialBackend
from amorsize.run.backends.threads import ThreadBackend

__all__ = ["PoolCache", "PooledBackend", "get_pool", "lease", "shutdown_pools", "warm_workers"]

#: Idle backends kept at most (least recently used closed first): enough for the last configuration
#: of each local kind (serial, threads, processes); more would keep idle processes and their memory
#: for configurations rarely reused.
MAX_IDLE_BACKENDS = 3

#: The kinds this module can create.
POOLED_KINDS: tuple[ExecutorKind, ...] = ("serial", "threads", "processes")

_Key = tuple[str, int, "str | None", "int | None"]


class PooledBackend(ClosingContext):
    """A lease on a cached backend: use it as the backend; ``close()`` gives it back to the cache.

    Attributes:
        kind: the backend's kind.
        backend: the backend itself (the same object across leases of one configuration).
    """

    def __init__(self, cache: PoolCache, key: _Key, backend: Backend) -> None:
        self.kind: ExecutorKind = backend.kind
        self.backend = backend
        self._cache = cache
        self._key = key
        self._returned = False

    @property
    def n_workers(self) -> int:
        """How many chunks can run at the same time."""
        return self.backend.n_workers

    @property
    def runs_inline(self) -> bool:
        """The backend's ``runs_inline`` (see :class:`~amorsize.run.backends.serial.SerialBackend`)."""
        return bool(getattr(self.backend, "runs_inline", False))

    def submit(self, task: ChunkTask) -> Future[ChunkOutcome]:
        """Queue one chunk on the backend (see :class:`~amorsize.run.backend.Backend`)."""
        return self.backend.submit(task)

    def abort(self) -> None:
        """Stop the backend's running and queued work; it stays usable and goes back to the cache."""
        self.backend.abort()

    def close(self) -> None:
        """Give the backend back to the cache (it is not closed). Idempotent."""
        if not self._returned:
            self._returned = True
            self._cache.give_back(self._key, self.backend)

    def __repr__(self) -> str:
        return f"PooledBackend({self.backend!r}, returned={self._returned})"


class PoolCache:
    """Idle backends by configuration, and every backend lent out (so ``shutdown`` reaches them).

    Args:
        max_idle: idle backends kept at most.
    """

    def __init__(self, max_idle: int = MAX_IDLE_BACKENDS) -> None:
        self._max_idle = max_idle
        self._lock = threading.Lock()
        self._idle: OrderedDict[_Key, Backend] = OrderedDict()
        self._leased: dict[int, Backend] = {}

    def get(
        self,
        kind: str,
        n_workers: int,
        *,
        start_method: str | None = None,
        blas_threads: int | None = None,
    ) -> PooledBackend:
        """Lease a backend of this configuration: the idle one if there is one, else a new one.

        Args:
            kind: ``"serial"``, ``"threads"`` or ``"processes"``.
            n_workers: workers (ignored for serial).
            start_method: processes only; None: what runs use by default
                (:func:`~amorsize.measure.machine.default_start_method`: ``$AMORSIZE_START_METHOD``,
                then multiprocessing's choice).
            blas_threads: processes only; BLAS thread cap in the workers, or None.

        Returns:
            The lease; close it (or use ``with``) to give the backend back.

        Raises:
            ConfigurationError: an unknown kind or a bad setting.
        """
        key = _key(kind, n_workers, start_method, blas_threads)
        with self._lock:
            backend = self._idle.pop(key, None)
        if backend is None:
            backend = _create(key)
        with self._lock:
            self._leased[id(backend)] = backend
        return PooledBackend(self, key, backend)

    def give_back(self, key: _Key, backend: Backend) -> None:
        """Return a leased backend: kept idle for the next lease of its configuration, or closed."""
        surplus: list[Backend] = []
        with self._lock:
            self._leased.pop(id(backend), None)
            if getattr(backend, "closed", False) or key in self._idle:  # closed: not worth keeping
                surplus.append(backend)
            else:
                self._idle[key] = backend
                while len(self._idle) > self._max_idle:
                    surplus.append(self._idle.popitem(last=False)[1])
        for extra in surplus:
            extra.close()

    def warm_workers(self) -> dict[str, int]:
        """Idle, started workers in idle backends, per kind (``"threads"``, ``"processes"``)."""
        counts = {"threads": 0, "processes": 0}
        with self._lock:
            idle = list(self._idle.values())
        for backend in idle:
            if isinstance(backend, (ThreadBackend, ProcessBackend)):
                counts[backend.kind] += backend.idle_workers
        return counts

    def shutdown(self) -> None:
        """Close every backend, idle or leased. The cache stays usable."""
        with self._lock:
            backends = [*self._idle.values(), *self._leased.values()]
            self._idle.clear()
            self._leased.clear()
        for backend in backends:
            backend.close()

    def forget(self) -> None:
        """Drop every backend without closing it (in a forked child, they belong to the parent)."""
        self._lock = threading.Lock()
        self._idle = OrderedDict()
        self._leased = {}


def _key(kind: str, n_workers: int, start_method: str | None, blas_threads: int | None) -> _Key:
    if kind not in POOLED_KINDS:
        raise ConfigurationError(
            f"kind must be one of {', '.join(POOLED_KINDS)} for a pooled backend (got {kind!r})"
        )
    if n_workers < 1:
        raise ConfigurationError(f"n_workers must be >= 1 (got {n_workers})")
    if kind == "serial":
        return (kind, 1, None, None)
    if kind == "threads":
        return (kind, n_workers, None, None)
    # The start method the plan was made for (it honours $AMORSIZE_START_METHOD, which
    # multiprocessing.get_start_method() ignores).
    return (kind, n_workers, start_method or default_start_method(), blas_threads)


def _create(key: _Key) -> Backend:
    kind, n_workers, start_method, blas_threads = key
    if kind == "serial":
        return SerialBackend()
    if kind == "threads":
        return ThreadBackend(n_workers)
    return ProcessBackend(n_workers, start_method=start_method, blas_threads=blas_threads)


_default = PoolCache()
atexit.register(_default.shutdown)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_default.forget)


def get_pool(
    kind: str, n_workers: int, *, start_method: str | None = None, blas_threads: int | None = None
) -> PooledBackend:
    """Lease a warm backend from the default cache (see :meth:`PoolCache.get`)."""
    return _default.get(kind, n_workers, start_method=start_method, blas_threads=blas_threads)


def lease(
    kind: str, n_workers: int, *, start_method: str | None = None, blas_threads: int | None = None
) -> PooledBackend:
    """The ``with``-statement spelling of :func:`get_pool`: ``with lease(...) as backend: ...``."""
    return get_pool(kind, n_workers, start_method=start_method, blas_threads=blas_threads)


def warm_workers() -> dict[str, int]:
    """Idle started workers in the default cache, per kind (the planner discounts their start-up)."""
    return _default.warm_workers()


def shutdown_pools() -> None:
    """Close every backend of the default cache (also done at interpreter exit)."""
    _default.shutdown()
