"""Every exception Amorsize raises, under one root.

The tree::

    AmorsizeError                       root: ``except AmorsizeError`` catches them all
    ├── ConfigurationError (ValueError) a bad argument or option; says what was received and how to fix it
    ├── MissingExtraError (ImportError) an optional dependency is not installed; names the extra
    ├── SamplingError                   ``func`` raised during the dry run; names the item's index,
    │                                   the original exception is ``__cause__``
    ├── StoreError                      the on-disk store is unusable (permissions, owner, corruption)
    ├── CheckpointMismatchError (ValueError)  a checkpoint belongs to another function or other data
    └── ExecutionError                  a run failed
        ├── ItemError                   ``func`` raised on one item; ``.index`` names it, the worker's
        │                               exception (with its remote traceback) is ``__cause__``
        ├── WorkerDiedError             a worker process died (signal, segfault, OOM kill, ``os._exit``);
        │                               ``.exitcode``, ``.signal_name`` and ``.indices`` (items in flight)
        ├── ItemTimeoutError (TimeoutError)  one item ran longer than ``timeout``; ``.index``
        └── CircuitOpenError            the run's circuit breaker is open; items are failed fast

Errors raised *inside* the user's function keep their own type: they travel as ``__cause__`` of an
:class:`ItemError` so that the index of the failing item is never lost.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence

__all__ = [
    "AmorsizeError",
    "CheckpointMismatchError",
    "CircuitOpenError",
    "ConfigurationError",
    "ExecutionError",
    "ItemError",
    "ItemTimeoutError",
    "MissingExtraError",
    "SamplingError",
    "StoreError",
    "WorkerDiedError",
]


class AmorsizeError(Exception):
    """Root of every exception raised by Amorsize itself."""


class ConfigurationError(AmorsizeError, ValueError):
    """A bad argument or option: the message says what was wrong, what was received, how to fix it."""


class MissingExtraError(AmorsizeError, ImportError):
    """An optional dependency is missing; the message names the ``pip install`` extra that provides it."""

    def __init__(self, feature: str, extra: str, module: str) -> None:
        self.feature = feature
        self.extra = extra
        self.module = module
        super().__init__(
            f"{feature} needs the optional dependency {module!r}, which is not installed; "
            f"install it with: pip install 'amorsize[{extra}]'"
        )


class SamplingError(AmorsizeError):
    """The function raised while Amorsize sampled it (the dry run).

    Attributes:
        index: position of the failing item in the input.
    """

    def __init__(self, index: int, error: BaseException) -> None:
        self.index = index
        super().__init__(
            f"the function raised {type(error).__name__} on item {index} during the dry run: {error}"
        )


class StoreError(AmorsizeError):
    """The on-disk store cannot be used safely (wrong owner, bad permissions, corrupt file)."""


class CheckpointMismatchError(AmorsizeError, ValueError):
    """A checkpoint was made for another function or other data; resuming it would mix results."""


class ExecutionError(AmorsizeError):
    """A run failed. Subclasses say how."""


class ItemError(ExecutionError):
    """The function raised on one item.

    The original exception is ``__cause__`` (its worker-side traceback is attached to it as a
    ``RemoteTraceback`` cause when it came from another process).

    Attributes:
        index: position of the failing item in the input.
        error_type: name of the original exception type.
    """

    def __init__(self, index: int, error: BaseException, remote_traceback: str | None = None) -> None:
        self.index = index
        self.error_type = type(error).__name__
        self.remote_traceback = remote_traceback
        super().__init__(f"item {index} raised {type(error).__name__}: {error}")


def _signal_name(exitcode: int | None) -> str | None:
    if exitcode is None or exitcode >= 0:
        return None
    try:
        return signal.Signals(-exitcode).name
    except ValueError:
        return f"signal {-exitcode}"


class WorkerDiedError(ExecutionError):
    """A worker process died while it held work.

    Attributes:
        exitcode: the process exit code (negative: killed by that signal number).
        signal_name: e.g. ``"SIGKILL"`` or ``"SIGSEGV"``, or None for a plain exit.
        indices: the input positions that were in flight on that worker.
    """

    def __init__(self, exitcode: int | None, indices: Sequence[int], pid: int | None = None) -> None:
        self.exitcode = exitcode
        self.signal_name = _signal_name(exitcode)
        self.indices = tuple(indices)
        self.pid = pid
        how = f"was killed by {self.signal_name}" if self.signal_name else f"exited with code {exitcode}"
        shown = ", ".join(str(i) for i in self.indices[:10])
        if len(self.indices) > 10:
            shown += f", … ({len(self.indices)} in all)"
        likely = (
            "likely causes: the out-of-memory killer, a crash (segfault) in a C extension, "
            "or an external kill"
        )
        super().__init__(
            f"worker process {pid if pid is not None else '?'} {how} while running items [{shown}]; {likely}"
        )


class ItemTimeoutError(ExecutionError, TimeoutError):
    """One item ran longer than the run's ``timeout``; its worker was stopped.

    Attributes:
        index: position of the item in the input.
        timeout: the limit in seconds.
    """

    def __init__(self, index: int, timeout: float) -> None:
        self.index = index
        self.timeout = timeout
        super().__init__(
            f"item {index} ran longer than timeout={timeout:g}s and was stopped "
            "(process workers are killed and replaced; a thread cannot be stopped and is abandoned)"
        )


class CircuitOpenError(ExecutionError):
    """The run's circuit breaker is open: the item was failed fast without calling the function."""
