"""The run's gate: circuit breaker and rate limit applied in the parent, for every worker at once.

::

    parent                                                           workers
    ──────                                                           ───────
    runner._fill ── gate.admit(wanted, in_flight) ──► Admission
       │   breaker OPEN ───────────► fail the next items at once (CircuitOpenError), send nothing
       │   breaker CLOSED ─────────► 1 item per chunk, at most n_workers items in flight
       │   breaker HALF_OPEN ──────► one probe item, only when no probe is out
       │   rate limit ─────────────► chunk <= chunk_cap items, k items take k tokens, else wait
       └── submit(chunk) ────────────────────────────────────────────► func(item)
    runner._handle ◄─────────────────────────────── outcomes ─────────┘
       └── gate.record(error or None) per item ──► breaker counts failures from all workers

Why chunks of one item with a breaker: the breaker can only stop what it has not sent. With one item
per chunk and at most ``n_workers`` items in flight, when the ``failure_threshold``-th failure comes
back at most ``n_workers - 1`` other calls are under way, so a down service sees at most
``failure_threshold + n_workers - 1`` calls from the run (each retried ``max_retries`` more times
if a retry policy is set). The cost is one parent round trip per item (tens of µs on threads,
~0.1–0.3 ms on processes), small next to the service calls a breaker is for.

The dry run goes through the same gate (:class:`GuardedFunction`): its calls are paced and counted,
and while the breaker is open it calls nothing.
"""

from __future__ import annotations

import functools
import math
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from amorsize.resilience.circuit import CircuitBreaker, CircuitState
from amorsize.resilience.ratelimit import TokenBucket
from amorsize.run.runner import FAIL_FAST_BATCH, Admission, Failed

__all__ = ["GuardedFunction", "RunGate"]


class RunGate:
    """A :class:`~amorsize.run.runner.DispatchGate`: a circuit breaker and/or a token bucket.

    Args:
        breaker: the run's breaker, or None.
        bucket: the run's token bucket, or None.
        n_workers: the backend's workers (the in-flight bound); set it once the plan is known.
        sleep: how the dry run waits for tokens (the runner waits by itself).

    Example:
        >>> from amorsize.resilience.circuit import CircuitBreakerPolicy
        >>> gate = RunGate(breaker=CircuitBreaker(CircuitBreakerPolicy(failure_threshold=1)), n_workers=2)
        >>> gate.admit(50, in_flight=0)     # closed: one item per chunk
        Admission(n=1, wait=None, fail_fast=None)
        >>> gate.admit(50, in_flight=2)     # two in flight on two workers: wait for one to finish
        Admission(n=0, wait=None, fail_fast=None)
        >>> gate.dispatched(1, start=0, sent=1)
        >>> gate.record(0, ConnectionError("down"))
        >>> type(gate.admit(50, in_flight=1).fail_fast).__name__
        'CircuitOpenError'
    """

    def __init__(
        self,
        *,
        breaker: CircuitBreaker | None = None,
        bucket: TokenBucket | None = None,
        n_workers: int = 1,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.breaker = breaker
        self.bucket = bucket
        self.n_workers = max(1, n_workers)
        self._sleep = sleep
        self._epoch = 0  # the breaker's epoch at the last admission
        self._epochs: dict[int, int] = {}  # input position → breaker epoch it was sent in (in flight)
        self._waits = threading.local()  # per thread: seconds the dry run waited for tokens

    def __repr__(self) -> str:
        return f"RunGate(breaker={self.breaker!r}, bucket={self.bucket!r}, n_workers={self.n_workers})"

    def admit(self, wanted: int, in_flight: int) -> Admission:
        """See :meth:`~amorsize.run.runner.DispatchGate.admit` and the module docstring."""
        breaker, bucket = self.breaker, self.bucket
        if breaker is not None and breaker.state is CircuitState.OPEN:
            return Admission(FAIL_FAST_BATCH, fail_fast=breaker.open_error())
        n = max(1, wanted)
        limit = math.inf
        if breaker is not None:
            n, limit = 1, self.n_workers
        if bucket is not None:
            cap = bucket.policy.chunk_cap
            n = min(n, cap)
            limit = min(limit, self.n_workers * cap)
        if in_flight >= limit:
            return Admission(0)
        if limit < math.inf:
            n = max(1, min(n, int(limit) - in_flight))
        if breaker is not None:
            granted, self._epoch = breaker.admit(1)
            if granted == 0:
                return Admission(0)  # half-open with its probe out: wait for the probe's outcome
        if bucket is not None:
            wait = bucket.take(n)
            if wait > 0:
                if breaker is not None:
                    breaker.release(1)
                return Admission(0, wait=wait)
        return Admission(n)

    def dispatched(self, admitted: int, start: int, sent: int) -> None:
        """Note the breaker epoch of the items sent; release the reservation of one not sent."""
        if self.breaker is None:
            return
        if sent < min(admitted, 1):
            self.breaker.release(1)
        for position in range(start, start + sent):
            self._epochs[position] = self._epoch

    def record(self, position: int, error: BaseException | None) -> None:
        """Count one item's outcome in the breaker, with the epoch it was sent in."""
        if self.breaker is not None:
            self.breaker.record(error, self._epochs.pop(position, None))

    def before_call(self) -> tuple[BaseException | None, int | None]:
        """For a call made in the parent (the dry run): wait for a token.

        Returns:
            (the error if the breaker refuses the call, the breaker epoch to record its outcome with).
        """
        epoch: int | None = None
        if self.breaker is not None:
            granted, epoch = self.breaker.admit(1)
            if granted == 0:
                return self.breaker.open_error(), epoch
        if self.bucket is not None:
            began = time.perf_counter()
            self.bucket.acquire(1, sleep=self._sleep)
            self._waits.seconds = getattr(self._waits, "seconds", 0.0) + time.perf_counter() - began
        return None, epoch

    def dry_run_clock(self) -> float:
        """``time.perf_counter()`` less this thread's waits for tokens: the dry run times the
        function, not the pacing (else a paced fast function would look like a slow, waiting one)."""
        return time.perf_counter() - getattr(self._waits, "seconds", 0.0)

    def record_call(self, error: BaseException | None, epoch: int | None) -> None:
        """Count the outcome of a call made in the parent."""
        if self.breaker is not None:
            self.breaker.record(error, epoch)


def _unguarded(func: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return func


class GuardedFunction:
    """The dry run's function: calls pass the run's gate, and failures can come back as results.

    With ``collect``, an exception (or a refusal by an open breaker) is returned as a
    :class:`~amorsize.run.runner.Failed` marker, which the runner then treats as that item's failure
    (dead-lettered, collected); without, it is raised (the dry run then stops with SamplingError).
    It pickles as the function it guards: the dry run measures the function that workers will run.

    Args:
        func: the function workers run (retry included).
        gate: the run's gate, or None.
        collect: return failures as markers instead of raising them.
    """

    def __init__(self, func: Callable[[Any], Any], gate: RunGate | None, *, collect: bool) -> None:
        self.func = func
        self.gate = gate
        self.collect = collect
        functools.update_wrapper(self, func)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_unguarded, (self.func,))

    def __call__(self, item: Any) -> Any:
        gate = self.gate
        epoch: int | None = None
        if gate is not None:
            refused, epoch = gate.before_call()
            if refused is not None:
                if self.collect:
                    return Failed(refused, "", item)
                raise refused
        try:
            result = self.func(item)
        except Exception as error:
            if gate is not None:
                gate.record_call(error, epoch)
            if not self.collect:
                raise
            return Failed(error, traceback.format_exc(), item)
        if gate is not None:
            gate.record_call(None, epoch)
        return result
