"""A circuit breaker: stop calling a service that keeps failing, probe it after a while, resume.

States (after pybreaker's, whose consecutive-failure counting this follows)::

             failure_threshold consecutive failures          timeout elapsed
    CLOSED ──────────────────────────────────────► OPEN ───────────────────► HALF_OPEN
      ▲            (on_open)                         ▲                          │ one probe at a time
      │                                              └──── a probe fails ───────┤  (on_open)
      └──────────── success_threshold probes succeed (on_close) ────────────────┘

In a run (``execute(..., circuit_breaker=...)``) the breaker lives in the parent, one state for all
workers: the runner counts every worker's outcomes in it and, while it is open, sends nothing and fails
items at once (see :mod:`amorsize.resilience.gate`). The :func:`with_circuit_breaker` decorator is for
calls in one process; a decorated function given to ``execute`` has its breaker lifted into the
parent, so it is shared there too.

A breaker is thread-safe. Pickled (e.g. inside a function sent to a worker you manage yourself), it
arrives closed, as a separate breaker of that process.

Example:
    >>> now = [0.0]
    >>> breaker = CircuitBreaker(CircuitBreakerPolicy(failure_threshold=2, timeout=10), clock=lambda: now[0])
    >>> for _ in range(2):
    ...     breaker.record(ConnectionError("down"))
    >>> breaker.state
    <CircuitState.OPEN: 'open'>
    >>> now[0] = 10.0
    >>> breaker.state
    <CircuitState.HALF_OPEN: 'half_open'>
"""

from __future__ import annotations

import enum
import functools
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, overload

from amorsize.errors import CircuitOpenError, ConfigurationError
from amorsize.resilience.retry import _exception_types

__all__ = [
    "CircuitBreaker",
    "CircuitBreakerPolicy",
    "CircuitState",
    "ProtectedFunction",
    "unwrap_breaker",
    "with_circuit_breaker",
]

#: Defaults: the seed README's example (open after 5 failures, close after 2 successful probes, probe
#: after 60 s) — pybreaker's defaults are the same order (fail_max=5, reset_timeout=60).
DEFAULT_FAILURE_THRESHOLD = 5
DEFAULT_SUCCESS_THRESHOLD = 2
DEFAULT_TIMEOUT = 60.0


class CircuitState(enum.Enum):
    """Where a breaker is: calls pass (CLOSED), are refused (OPEN), or one probe passes (HALF_OPEN)."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class CircuitBreakerPolicy:
    """When a breaker opens and closes again.

    Attributes:
        failure_threshold: consecutive failures (of ``expected_exceptions``) that open it.
        success_threshold: successful probes in a row, while half-open, that close it.
        timeout: seconds it stays open before letting a probe through.
        expected_exceptions: the exception types that count as the service failing; any other
            exception fails its call but does not move the breaker.
        on_open: called as ``on_open(failure_count, last_error)`` each time it opens (in the parent).
        on_close: called as ``on_close()`` when it closes again.

    Raises:
        ConfigurationError: a field out of range (the message says which and what was received).
    """

    failure_threshold: int = DEFAULT_FAILURE_THRESHOLD
    success_threshold: int = DEFAULT_SUCCESS_THRESHOLD
    timeout: float = DEFAULT_TIMEOUT
    expected_exceptions: tuple[type[BaseException], ...] = (Exception,)
    on_open: Callable[[int, BaseException], None] | None = None
    on_close: Callable[[], None] | None = None

    def __post_init__(self) -> None:
        for name in ("failure_threshold", "success_threshold"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{name} must be an integer >= 1 (got {value!r})")
        timeout = self.timeout
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0:
            raise ConfigurationError(f"timeout must be a number of seconds >= 0 (got {timeout!r})")
        object.__setattr__(
            self, "expected_exceptions", _exception_types("expected_exceptions", self.expected_exceptions)
        )
        for name in ("on_open", "on_close"):
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise ConfigurationError(f"{name} must be callable or None (got {value!r})")


class CircuitBreaker:
    """One breaker state, thread-safe. See the module docstring for the states.

    Args:
        policy: thresholds, timeout and callbacks; default :class:`CircuitBreakerPolicy()`.
        clock: monotonic seconds (tests pass a fake).

    Example:
        >>> breaker = CircuitBreaker(CircuitBreakerPolicy(failure_threshold=1))
        >>> breaker.call(abs, -3)
        3
        >>> breaker.record(TimeoutError("slow"))
        >>> try:
        ...     breaker.call(abs, -3)
        ... except CircuitOpenError as error:
        ...     print(str(error)[:64])
        the circuit breaker is open after 1 consecutive failure (last: T
    """

    def __init__(
        self, policy: CircuitBreakerPolicy | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if policy is not None and not isinstance(policy, CircuitBreakerPolicy):
            raise ConfigurationError(f"policy must be a CircuitBreakerPolicy (got {type(policy).__name__})")
        self.policy = policy if policy is not None else CircuitBreakerPolicy()
        self._clock = clock
        self._lock = threading.Lock()
        self._reset_locked()

    def _reset_locked(self) -> None:
        self._state = CircuitState.CLOSED
        self._failures = 0  # consecutive, while closed; the count that opened it, while open
        self._successes = 0  # probes succeeded, while half-open
        self._probes = 0  # probes let through and not yet recorded, while half-open
        self._opened_at = -math.inf
        self._last_error: BaseException | None = None
        self._epoch = 0  # +1 at every change of state: outcomes of calls let in before it are stale
        self.times_opened = 0

    def __getstate__(self) -> dict[str, Any]:
        return {"policy": self.policy, "clock": self._clock}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.policy = state["policy"]
        self._clock = state["clock"]
        self._lock = threading.Lock()
        self._reset_locked()

    def __repr__(self) -> str:
        return f"CircuitBreaker(state={self.state.value}, failures={self._failures})"

    def _refresh_locked(self) -> None:
        if self._state is CircuitState.OPEN and self._clock() - self._opened_at >= self.policy.timeout:
            self._state = CircuitState.HALF_OPEN
            self._epoch += 1
            self._successes = 0
            self._probes = 0

    @property
    def state(self) -> CircuitState:
        """The current state (an open breaker whose timeout has passed reads as HALF_OPEN)."""
        with self._lock:
            self._refresh_locked()
            return self._state

    @property
    def failure_count(self) -> int:
        """Consecutive failures counted (while closed), or the count that opened it."""
        return self._failures

    def retry_after(self) -> float:
        """Seconds until an open breaker lets a probe through (0.0 unless it is open)."""
        with self._lock:
            self._refresh_locked()
            if self._state is not CircuitState.OPEN:
                return 0.0
            return max(0.0, self._opened_at + self.policy.timeout - self._clock())

    def open_error(self) -> CircuitOpenError:
        """The error a refused call fails with: says why the breaker is open and until when."""
        last = self._last_error
        cause = f" (last: {type(last).__name__}: {last})" if last is not None else ""
        plural = "" if self._failures == 1 else "s"
        left = self.retry_after()
        if left > 0:
            then = f"calls are refused for {left:.3g} s more, then one probe is let through"
        else:
            then = "a probe call is under way; the next one waits for its outcome"
        return CircuitOpenError(
            f"the circuit breaker is open after {self._failures} consecutive failure{plural}{cause}; {then}"
        )

    def acquire(self, n: int = 1) -> int:
        """Reserve up to ``n`` calls now; returns how many may be made (0 while open or probing).

        Closed: all ``n``. Half-open: one probe, if none is out. Every reserved call must be
        followed by :meth:`record` (its outcome) or :meth:`release` (not made after all).
        """
        return self.admit(n)[0]

    def admit(self, n: int = 1) -> tuple[int, int]:
        """:meth:`acquire`, also returning the epoch to pass to :meth:`record` with each outcome."""
        with self._lock:
            self._refresh_locked()
            if self._state is CircuitState.CLOSED:
                return n, self._epoch
            if self._state is CircuitState.HALF_OPEN and self._probes == 0 and n > 0:
                self._probes = 1
                return 1, self._epoch
            return 0, self._epoch

    def release(self, n: int = 1) -> None:
        """Give back ``n`` reserved calls that were not made."""
        with self._lock:
            if self._state is CircuitState.HALF_OPEN:
                self._probes = max(0, self._probes - n)

    def record(self, error: BaseException | None, epoch: int | None = None) -> None:
        """Count one finished call: None for a success, else the exception it raised.

        Args:
            error: the call's exception, or None.
            epoch: the epoch :meth:`admit` returned when the call was let in. A call let in before
                the breaker last changed state is stale (it says how the service was then) and is
                ignored; so is any outcome while the breaker is open. None: count it (one thread).
        """
        callback: Callable[[], None] | None = None
        opened: tuple[int, BaseException] | None = None
        with self._lock:
            self._refresh_locked()
            if epoch is not None and epoch != self._epoch:
                return
            expected = error is not None and isinstance(error, self.policy.expected_exceptions)
            if self._state is CircuitState.CLOSED:
                if error is None:
                    self._failures = 0
                elif expected:
                    assert error is not None
                    self._failures += 1
                    self._last_error = error
                    if self._failures >= self.policy.failure_threshold:
                        opened = self._open_locked(error)
            elif self._state is CircuitState.HALF_OPEN:
                self._probes = max(0, self._probes - 1)
                if error is None:
                    self._successes += 1
                    if self._successes >= self.policy.success_threshold:
                        self._state = CircuitState.CLOSED
                        self._epoch += 1
                        self._failures = 0
                        callback = self.policy.on_close
                elif expected:
                    assert error is not None
                    self._last_error = error
                    opened = self._open_locked(error)
        if opened is not None and self.policy.on_open is not None:
            self.policy.on_open(*opened)
        if callback is not None:
            callback()

    def _open_locked(self, error: BaseException) -> tuple[int, BaseException]:
        self._state = CircuitState.OPEN
        self._epoch += 1
        self._opened_at = self._clock()
        self._probes = 0
        self.times_opened += 1
        self._failures = max(self._failures, 1)
        return self._failures, error

    def call(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call ``func`` through the breaker.

        Raises:
            CircuitOpenError: the breaker is open (``func`` is not called).
            Exception: whatever ``func`` raises (counted first).
        """
        granted, epoch = self.admit(1)
        if granted == 0:
            raise self.open_error()
        try:
            result = func(*args, **kwargs)
        except BaseException as error:
            self.record(error, epoch)
            raise
        self.record(None, epoch)
        return result

    def reset(self) -> None:
        """Close the breaker and forget its counts (no callback)."""
        with self._lock:
            self._reset_locked()


class ProtectedFunction:
    """A function called through a :class:`CircuitBreaker` (made by :func:`with_circuit_breaker`).

    Attributes:
        func: the wrapped function.
        breaker: the breaker (shared by every function decorated with the same breaker).
    """

    def __init__(self, func: Callable[..., Any], breaker: CircuitBreaker) -> None:
        if not callable(func):
            raise ConfigurationError(
                f"with_circuit_breaker needs a callable (got {type(func).__name__}: {func!r:.60})"
            )
        self.func = func
        self.breaker = breaker
        functools.update_wrapper(self, func)

    def __repr__(self) -> str:
        return f"ProtectedFunction({self.func!r}, {self.breaker!r})"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.breaker.call(self.func, *args, **kwargs)


def unwrap_breaker(func: Callable[..., Any]) -> tuple[Callable[..., Any], CircuitBreaker | None]:
    """Split a :class:`ProtectedFunction` into its function and its breaker (None when unprotected)."""
    if isinstance(func, ProtectedFunction):
        return func.func, func.breaker
    return func, None


@overload
def with_circuit_breaker(policy: Callable[..., Any], /) -> ProtectedFunction: ...


@overload
def with_circuit_breaker(
    policy: CircuitBreakerPolicy | CircuitBreaker | None = None, /
) -> Callable[[Callable[..., Any]], ProtectedFunction]: ...


def with_circuit_breaker(
    policy: CircuitBreakerPolicy | CircuitBreaker | Callable[..., Any] | None = None, /
) -> ProtectedFunction | Callable[[Callable[..., Any]], ProtectedFunction]:
    """Decorate a function so it is called through a circuit breaker.

    ``@with_circuit_breaker()`` gives it a breaker of its own; ``@with_circuit_breaker(policy)`` one
    with that policy; ``@with_circuit_breaker(breaker)`` shares an existing breaker (several functions
    calling one service). Given to ``execute``/``imap``, the breaker moves to the parent: one state
    for all workers.

    Args:
        policy: a :class:`CircuitBreakerPolicy`, a :class:`CircuitBreaker`, None, or (bare use) the
            function itself.

    Returns:
        A :class:`ProtectedFunction`, or a decorator that makes one.

    Raises:
        ConfigurationError: ``policy`` is none of those.

    Example:
        >>> @with_circuit_breaker(CircuitBreakerPolicy(failure_threshold=3))
        ... def fetch(x):
        ...     return x + 1
        >>> fetch(1), fetch.breaker.state.value
        (2, 'closed')
    """
    if isinstance(policy, CircuitBreaker):
        breaker = policy
    elif policy is None or isinstance(policy, CircuitBreakerPolicy):
        breaker = CircuitBreaker(policy)
    elif callable(policy):
        return ProtectedFunction(policy, CircuitBreaker())
    else:
        raise ConfigurationError(
            "with_circuit_breaker takes a CircuitBreakerPolicy, a CircuitBreaker or nothing "
            f"(got {type(policy).__name__}: {policy!r:.60})"
        )

    def decorate(func: Callable[..., Any]) -> ProtectedFunction:
        return ProtectedFunction(func, breaker)

    return decorate
