"""A rate limit for a whole run: a token bucket in the parent, paced dispatch for all workers.

The bucket holds up to ``burst`` tokens and refills at ``calls_per_second``; sending a chunk of k
items takes k tokens. The runner asks before each chunk (:mod:`amorsize.resilience.gate`), so the
limit holds across every worker of the run, not per worker process.

Example:
    >>> now = [0.0]
    >>> bucket = TokenBucket(RateLimitPolicy(calls_per_second=10, burst=2), clock=lambda: now[0])
    >>> bucket.take(2), bucket.take(1)   # the burst is spent; the next token comes in 0.1 s
    (0.0, 0.1)
    >>> now[0] = 0.1
    >>> bucket.take(1)
    0.0
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from amorsize.errors import ConfigurationError

__all__ = ["RATE_CHUNK_SECONDS", "RateLimitPolicy", "TokenBucket"]

#: Under a rate limit a chunk holds at most this many seconds' worth of the allowed rate (and never
#: more than ``burst``): a worker runs a chunk's items back to back, so a chunk is a burst, and 20 ms
#: keeps it short next to limits stated per second while making chunks of several items above
#: 50 calls/s (fewer parent round trips). A judgement call, not a measurement.
RATE_CHUNK_SECONDS = 0.02


@dataclass(frozen=True)
class RateLimitPolicy:
    """At most ``calls_per_second`` calls per second over the run, with bursts of up to ``burst``.

    Attributes:
        calls_per_second: the sustained rate (> 0).
        burst: calls that may go at once after a quiet spell (>= 1); 1 means strictly paced.

    Raises:
        ConfigurationError: a field out of range (the message says which and what was received).
    """

    calls_per_second: float
    burst: int = 1

    def __post_init__(self) -> None:
        rate = self.calls_per_second
        if (
            isinstance(rate, bool)
            or not isinstance(rate, (int, float))
            or not math.isfinite(rate)
            or rate <= 0
        ):
            raise ConfigurationError(f"calls_per_second must be a finite number > 0, e.g. 10 (got {rate!r})")
        if isinstance(self.burst, bool) or not isinstance(self.burst, int) or self.burst < 1:
            raise ConfigurationError(f"burst must be an integer >= 1 (got {self.burst!r})")

    @property
    def chunk_cap(self) -> int:
        """Items per chunk at most under this limit (see :data:`RATE_CHUNK_SECONDS`)."""
        return max(1, min(self.burst, math.floor(self.calls_per_second * RATE_CHUNK_SECONDS)))


class TokenBucket:
    """The token bucket of a :class:`RateLimitPolicy`; starts full. Thread-safe.

    Args:
        policy: the limit.
        clock: monotonic seconds (tests pass a fake).
    """

    def __init__(self, policy: RateLimitPolicy, *, clock: Callable[[], float] = time.monotonic) -> None:
        if not isinstance(policy, RateLimitPolicy):
            raise ConfigurationError(f"policy must be a RateLimitPolicy (got {type(policy).__name__})")
        self.policy = policy
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens = float(policy.burst)
        self._updated = clock()

    def __repr__(self) -> str:
        return f"TokenBucket({self.policy.calls_per_second:g}/s, burst={self.policy.burst})"

    def _refill_locked(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(float(self.policy.burst), self._tokens + elapsed * self.policy.calls_per_second)
        self._updated = now

    def take(self, n: int = 1) -> float:
        """Take ``n`` tokens if they are there; else take none.

        Returns:
            0.0 when taken, else the seconds until ``n`` tokens will be there.

        Raises:
            ConfigurationError: ``n`` is more than the bucket can ever hold (``burst``).
        """
        if n > self.policy.burst:
            raise ConfigurationError(
                f"cannot take {n} tokens at once from a bucket of burst={self.policy.burst}; "
                "take at most burst tokens at a time"
            )
        with self._lock:
            self._refill_locked()
            # A hair of slack: floating-point refills land a few ulps short of a whole token.
            if self._tokens + 1e-9 >= n:
                self._tokens = max(0.0, self._tokens - n)
                return 0.0
            return (n - self._tokens) / self.policy.calls_per_second

    def acquire(self, n: int = 1, *, sleep: Callable[[float], None] = time.sleep) -> float:
        """Wait until ``n`` tokens are there and take them.

        Returns:
            Seconds spent waiting.
        """
        waited = 0.0
        while True:
            wait = self.take(n)
            if wait <= 0:
                return waited
            sleep(wait)
            waited += wait
