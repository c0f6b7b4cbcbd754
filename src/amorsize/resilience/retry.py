"""Retry one item with exponential backoff and jitter, inside the worker: built on tenacity.

``with_retry`` wraps a function in a :class:`RetryingFunction`, a plain picklable object (cloudpickle
ships it to process workers under fork, spawn or forkserver), whose call runs the function under a
``tenacity.Retrying`` loop built from a :class:`RetryPolicy`. ``execute(..., retry=policy)`` does the
same wrapping for you. The backoff sleeps happen in the worker, so other workers keep going::

    parent (runner) ── chunk ──► worker: for item in chunk:
                                   RetryingFunction(item):  attempt 1 ─ fails ─ sleep d1 ─ attempt 2 …
                                   success → result;  last failure → raised, with
                                   error.amorsize_retries = retries made (read by the dead-letter queue)

Why tenacity: it is maintained, tested, and its strategies (stop, wait, retry predicate, before-sleep
hook, injectable ``sleep``) map one to one onto the seed's policy fields; the only thing written here
is the wait strategy (the policy's exact schedule with "equal jitter") and the pickling. The first
attempt is a plain call, so a success costs nothing extra (tenacity's loop costs ~10 µs a call,
measured here); after a retryable failure the loop continues in tenacity, handed that failure as
its attempt 1.

Example:
    >>> calls = []
    >>> @with_retry(max_retries=2, initial_delay=0.0, jitter=False)
    ... def flaky(x):
    ...     calls.append(x)
    ...     if len(calls) < 3:
    ...         raise ConnectionError("try again")
    ...     return x * 10
    >>> flaky(4), len(calls)
    (40, 3)
"""

from __future__ import annotations

import contextlib
import functools
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, overload

from amorsize.errors import ConfigurationError

if TYPE_CHECKING:  # imported where a loop is built: tenacity pulls in asyncio (~4.6 MB, 10-25 ms)
    import tenacity

__all__ = ["RETRIES_ATTRIBUTE", "RetryPolicy", "RetryingFunction", "retries_of", "unwrap_retry", "with_retry"]

#: Attribute set on the exception an item finally failed with: how many retries were made before it.
#: It travels with the exception (pickled in its ``__dict__``) from a worker to the parent.
RETRIES_ATTRIBUTE = "amorsize_retries"

#: Default schedule: the seed README's documented "0.1 s → 0.2 s → 0.4 s → 0.8 s…", three retries,
#: capped at a minute (a service down for longer is the circuit breaker's business, not retry's).
DEFAULT_MAX_RETRIES = 3
DEFAULT_INITIAL_DELAY = 0.1
DEFAULT_MAX_DELAY = 60.0
DEFAULT_EXPONENTIAL_BASE = 2.0

F = TypeVar("F", bound=Callable[..., Any])


def _check_number(name: str, value: Any, *, minimum: float, inclusive: bool = True) -> None:
    ok = (
        not isinstance(value, bool)
        and isinstance(value, (int, float))
        and math.isfinite(value)
        and (value >= minimum if inclusive else value > minimum)
    )
    if not ok:
        bound = f">= {minimum:g}" if inclusive else f"> {minimum:g}"
        raise ConfigurationError(f"{name} must be a finite number {bound} (got {value!r})")


def _exception_types(name: str, value: Any) -> tuple[type[BaseException], ...]:
    types_ = value if isinstance(value, tuple) else (value,)
    if not types_ or not all(isinstance(t, type) and issubclass(t, BaseException) for t in types_):
        raise ConfigurationError(
            f"{name} must be an exception class or a non-empty tuple of them, e.g. "
            f"(ConnectionError, TimeoutError) (got {value!r})"
        )
    return types_


@dataclass(frozen=True)
class RetryPolicy:
    """How to retry one item: how often, how long to wait between attempts, on which exceptions.

    The wait before retry ``n`` (1 for the first) is ``initial_delay × exponential_base ** (n - 1)``,
    capped at ``max_delay``; with ``jitter`` it is drawn uniformly from ``[d/2, d]`` ("equal jitter",
    AWS Architecture Blog, "Exponential Backoff And Jitter", 2015): workers that failed together do
    not retry together, and at least half the backoff is kept.

    Attributes:
        max_retries: retries after the first attempt (0: no retry), so at most ``max_retries + 1`` calls.
        initial_delay: seconds before the first retry.
        max_delay: upper bound on any one wait, in seconds.
        exponential_base: growth factor of the wait from one retry to the next (>= 1).
        jitter: randomise each wait within ``[d/2, d]``.
        retry_on_exceptions: only these exception types are retried; others fail the item at once.
        on_retry: called as ``on_retry(error, attempt, delay)`` before each wait, *in the process
            that runs the item* (a worker process: its output goes to that worker's stderr).

    Raises:
        ConfigurationError: a field out of range (the message says which and what was received).

    Example:
        >>> RetryPolicy(initial_delay=0.1, jitter=False).delay(3)
        0.4
    """

    max_retries: int = DEFAULT_MAX_RETRIES
    initial_delay: float = DEFAULT_INITIAL_DELAY
    max_delay: float = DEFAULT_MAX_DELAY
    exponential_base: float = DEFAULT_EXPONENTIAL_BASE
    jitter: bool = True
    retry_on_exceptions: tuple[type[BaseException], ...] = (Exception,)
    on_retry: Callable[[BaseException, int, float], None] | None = None

    def __post_init__(self) -> None:
        if (
            isinstance(self.max_retries, bool)
            or not isinstance(self.max_retries, int)
            or self.max_retries < 0
        ):
            raise ConfigurationError(
                f"max_retries must be an integer >= 0 (got {self.max_retries!r}); 0 means no retry"
            )
        _check_number("initial_delay", self.initial_delay, minimum=0)
        _check_number("max_delay", self.max_delay, minimum=0)
        _check_number("exponential_base", self.exponential_base, minimum=1)
        if self.max_delay < self.initial_delay:
            raise ConfigurationError(
                f"max_delay ({self.max_delay!r}) must be >= initial_delay ({self.initial_delay!r})"
            )
        object.__setattr__(
            self, "retry_on_exceptions", _exception_types("retry_on_exceptions", self.retry_on_exceptions)
        )
        if self.on_retry is not None and not callable(self.on_retry):
            raise ConfigurationError(
                f"on_retry must be a callable (error, attempt, delay) or None (got {self.on_retry!r})"
            )

    def delay(self, retry: int, uniform: Callable[[float, float], float] = random.uniform) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first).

        Args:
            retry: the retry about to be made, >= 1.
            uniform: draws the jitter, ``uniform(a, b)``; tests pass a fake.
        """
        exponent = max(0, retry - 1)
        try:
            nominal = self.initial_delay * self.exponential_base**exponent
        except OverflowError:
            nominal = math.inf
        delay = min(self.max_delay, nominal)
        return uniform(delay / 2, delay) if self.jitter and delay > 0 else delay

    def retries(self, error: BaseException) -> bool:
        """Whether ``error`` is of a type this policy retries."""
        return isinstance(error, self.retry_on_exceptions)


class RetryingFunction:
    """A one-argument function retried per a :class:`RetryPolicy`; picklable, so it runs in workers.

    Made by :func:`with_retry` (or by ``execute(..., retry=...)``); call it like the function. On a
    final failure the last exception is raised unchanged, with :data:`RETRIES_ATTRIBUTE` set to the
    number of retries made.

    Attributes:
        func: the wrapped function.
        policy: the policy.
        sleep: how waits are made (``time.sleep``; tests pass a fake).
    """

    def __init__(
        self, func: Callable[..., Any], policy: RetryPolicy, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        if not callable(func):
            raise ConfigurationError(f"with_retry needs a callable (got {type(func).__name__}: {func!r:.60})")
        self.func = func
        self.policy = policy
        self.sleep = sleep
        functools.update_wrapper(self, func)
        self._local = threading.local()

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_local"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"RetryingFunction({self.func!r}, max_retries={self.policy.max_retries})"

    def _retrying(self) -> tenacity.Retrying:
        """This thread's tenacity loop (built once per thread: a Retrying object keeps per-call state)."""
        retrying: tenacity.Retrying | None = getattr(self._local, "retrying", None)
        if retrying is None:
            import tenacity  # only once an item failed: a run without retries never imports it

            policy = self.policy

            def wait(state: tenacity.RetryCallState) -> float:
                return policy.delay(state.attempt_number)  # tenacity's attempt_number = retry number

            before_sleep = None
            if policy.on_retry is not None:
                callback = policy.on_retry

                def before_sleep(state: tenacity.RetryCallState) -> None:
                    error = state.outcome.exception() if state.outcome is not None else None
                    delay = state.next_action.sleep if state.next_action is not None else 0.0
                    if error is not None:
                        callback(error, state.attempt_number, delay)

            retrying = tenacity.Retrying(
                sleep=self.sleep,
                stop=tenacity.stop_after_attempt(policy.max_retries + 1),
                wait=wait,
                retry=tenacity.retry_if_exception_type(policy.retry_on_exceptions),
                before_sleep=before_sleep,
                reraise=True,
            )
            self._local.retrying = retrying
        return retrying

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # The first attempt is a plain call: a success costs nothing more than the function.
        try:
            return self.func(*args, **kwargs)
        except BaseException as error:
            if self.policy.max_retries == 0 or not self.policy.retries(error):
                _set_retries(error, 0)
                raise
            first: list[BaseException] = [error]

        def attempt(*args: Any, **kwargs: Any) -> Any:
            if first:  # tenacity's attempt 1 is the call above: hand it its failure
                raise first.pop()
            return self.func(*args, **kwargs)

        retrying = self._retrying()
        try:
            return retrying(attempt, *args, **kwargs)
        except BaseException as error:
            _set_retries(error, int(retrying.statistics.get("attempt_number", 1)) - 1)
            raise


def _set_retries(error: BaseException, retries: int) -> None:
    with contextlib.suppress(AttributeError):  # an exception type refusing attributes
        setattr(error, RETRIES_ATTRIBUTE, max(0, retries))


def retries_of(error: BaseException) -> int:
    """How many retries were made before ``error`` failed its item (0 when it was not retried).

    Example:
        >>> retries_of(ValueError("never retried"))
        0
    """
    value = getattr(error, RETRIES_ATTRIBUTE, 0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def unwrap_retry(func: Callable[..., Any]) -> Callable[..., Any]:
    """The function inside any :class:`RetryingFunction` layers."""
    while isinstance(func, RetryingFunction):
        func = func.func
    return func


@overload
def with_retry(func: F, /) -> RetryingFunction: ...


@overload
def with_retry(
    func: None = None,
    /,
    *,
    policy: RetryPolicy | None = None,
    max_retries: int | None = None,
    initial_delay: float | None = None,
    max_delay: float | None = None,
    exponential_base: float | None = None,
    jitter: bool | None = None,
    retry_on_exceptions: type[BaseException] | tuple[type[BaseException], ...] | None = None,
    on_retry: Callable[[BaseException, int, float], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Callable[[Callable[..., Any]], RetryingFunction]: ...


def with_retry(
    func: Callable[..., Any] | None = None,
    /,
    *,
    policy: RetryPolicy | None = None,
    max_retries: int | None = None,
    initial_delay: float | None = None,
    max_delay: float | None = None,
    exponential_base: float | None = None,
    jitter: bool | None = None,
    retry_on_exceptions: type[BaseException] | tuple[type[BaseException], ...] | None = None,
    on_retry: Callable[[BaseException, int, float], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> RetryingFunction | Callable[[Callable[..., Any]], RetryingFunction]:
    """Decorate a function so each call is retried with exponential backoff (see :class:`RetryPolicy`).

    Use bare (``@with_retry``), with fields (``@with_retry(max_retries=5)``) or with a policy
    (``@with_retry(policy=policy)``), not both a policy and fields.

    Args:
        func: the function, when used bare.
        policy: a :class:`RetryPolicy`.
        max_retries, initial_delay, max_delay, exponential_base, jitter, retry_on_exceptions,
            on_retry: fields of a :class:`RetryPolicy` built for you (unset ones keep its defaults).
        sleep: how to wait (tests pass a fake). Must be picklable to run in process workers.

    Returns:
        A :class:`RetryingFunction`, or a decorator that makes one.

    Raises:
        ConfigurationError: both a policy and fields were given, or a field is out of range.

    Example:
        >>> @with_retry(max_retries=1, initial_delay=0, retry_on_exceptions=KeyError)
        ... def lookup(key):
        ...     return {"a": 1}[key]
        >>> lookup("a")
        1
        >>> try:
        ...     lookup("b")
        ... except KeyError as error:
        ...     retries_of(error)
        1
    """
    fields = {
        "max_retries": max_retries,
        "initial_delay": initial_delay,
        "max_delay": max_delay,
        "exponential_base": exponential_base,
        "jitter": jitter,
        "retry_on_exceptions": retry_on_exceptions,
        "on_retry": on_retry,
    }
    given: dict[str, Any] = {name: value for name, value in fields.items() if value is not None}
    if policy is not None and given:
        raise ConfigurationError(
            f"with_retry got both policy= and {', '.join(sorted(given))}; put those fields in the "
            "RetryPolicy instead"
        )
    if policy is not None and not isinstance(policy, RetryPolicy):
        raise ConfigurationError(f"policy must be a RetryPolicy (got {type(policy).__name__})")
    the_policy = policy if policy is not None else RetryPolicy(**given)

    def decorate(target: Callable[..., Any]) -> RetryingFunction:
        return RetryingFunction(target, the_policy, sleep)

    return decorate if func is None else decorate(func)
