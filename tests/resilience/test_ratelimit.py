"""Rate limit: the token bucket (fake clock), the gate's pacing, and measured call times of a real run."""

from __future__ import annotations

import doctest
from pathlib import Path
from typing import Any

import pytest
import resilience_funcs as funcs

import amorsize.resilience.ratelimit as ratelimit_module
from amorsize import execute
from amorsize.errors import ConfigurationError
from amorsize.resilience.circuit import CircuitBreaker, CircuitBreakerPolicy
from amorsize.resilience.gate import RunGate
from amorsize.resilience.ratelimit import RateLimitPolicy, TokenBucket
from amorsize.run.runner import Admission

# Runs here may start worker processes (the planner picks the executor): a deadlock must fail.
pytestmark = pytest.mark.timeout(60)


def test_doctests() -> None:
    assert doctest.testmod(ratelimit_module).failed == 0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class TestTokenBucket:
    def test_burst_then_paced(self) -> None:
        clock = Clock()
        bucket = TokenBucket(RateLimitPolicy(calls_per_second=4, burst=3), clock=clock)
        assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
        assert bucket.take(2) == pytest.approx(0.5)
        clock.now = 0.5
        assert bucket.take(2) == 0.0

    def test_never_holds_more_than_burst(self) -> None:
        clock = Clock()
        bucket = TokenBucket(RateLimitPolicy(calls_per_second=100, burst=2), clock=clock)
        clock.now = 3600
        assert bucket.take(2) == 0.0
        assert bucket.take(1) > 0

    def test_acquire_waits_with_the_given_sleep(self) -> None:
        clock = Clock()
        bucket = TokenBucket(RateLimitPolicy(calls_per_second=10), clock=clock)
        waited = [bucket.acquire(sleep=clock.sleep) for _ in range(5)]
        assert waited[0] == 0.0 and waited[1:] == pytest.approx([0.1] * 4)
        assert clock.now == pytest.approx(0.4)

    def test_more_than_burst_at_once_is_refused(self) -> None:
        with pytest.raises(ConfigurationError, match="cannot take 3 tokens at once from a bucket of burst=2"):
            TokenBucket(RateLimitPolicy(calls_per_second=1, burst=2)).take(3)

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"calls_per_second": 0}, "calls_per_second must be a finite number > 0"),
            ({"calls_per_second": float("inf")}, "calls_per_second must be a finite number > 0"),
            ({"calls_per_second": 5, "burst": 0}, "burst must be an integer >= 1 (got 0)"),
        ],
    )
    def test_bad_policies(self, kwargs: dict[str, Any], message: str) -> None:
        with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace(")", r"\)")):
            RateLimitPolicy(**kwargs)

    def test_chunk_cap(self) -> None:
        assert RateLimitPolicy(calls_per_second=10, burst=100).chunk_cap == 1
        assert RateLimitPolicy(calls_per_second=1000, burst=100).chunk_cap == 20
        assert RateLimitPolicy(calls_per_second=1000, burst=4).chunk_cap == 4


class TestGate:
    def test_rate_limited_gate_caps_chunks_and_paces(self) -> None:
        clock = Clock()
        bucket = TokenBucket(RateLimitPolicy(calls_per_second=500, burst=10), clock=clock)
        gate = RunGate(bucket=bucket, n_workers=2)
        assert gate.admit(100, in_flight=0) == Admission(10)
        assert gate.admit(100, in_flight=10) == Admission(0, wait=pytest.approx(0.02))
        clock.now = 0.02
        assert gate.admit(100, in_flight=10) == Admission(10)
        assert gate.admit(100, in_flight=20) == Admission(0)  # one capped chunk per worker in flight

    def test_breaker_and_rate_limit_together(self) -> None:
        clock = Clock()
        breaker = CircuitBreaker(CircuitBreakerPolicy(failure_threshold=1, timeout=1), clock=clock)
        gate = RunGate(
            breaker=breaker, bucket=TokenBucket(RateLimitPolicy(1, burst=1), clock=clock), n_workers=4
        )
        assert gate.admit(5, in_flight=0) == Admission(1)
        gate.dispatched(1, start=0, sent=1)
        waiting = gate.admit(5, in_flight=1)
        assert waiting.n == 0 and waiting.wait == pytest.approx(
            1.0
        )  # the breaker's reservation was given back
        gate.record(0, ConnectionError("down"))
        assert gate.admit(5, in_flight=0).fail_fast is not None  # open: fail fast, no token needed
        clock.now = 1.0
        assert gate.admit(5, in_flight=0) == Admission(1)  # the half-open probe, with the token of 1 s
        assert gate.admit(5, in_flight=1) == Admission(0)  # no second probe
        gate.dispatched(1, start=1, sent=0)  # the input had ended: the probe was not sent
        assert breaker.acquire() == 1


def check_rate(times: list[float], rate: float, burst: int, slack: int) -> None:
    """Every window [t_i, t_j] holds at most burst + rate × (t_j - t_i) + slack calls."""
    times = sorted(times)
    for i in range(len(times)):
        for j in range(i + 1, len(times)):
            allowed = burst + rate * (times[j] - times[i]) + slack
            assert j - i + 1 <= allowed, (
                f"{j - i + 1} calls within {times[j] - times[i]:.3f} s (calls {i}..{j}); "
                f"the limit allows {allowed:.1f}"
            )


@pytest.mark.wallclock
@pytest.mark.timeout(60)
class TestWholeRun:
    def test_calls_from_all_workers_respect_the_rate(self, tmp_path: Path) -> None:
        times = str(tmp_path / "times.txt")
        rate, burst, n = 50.0, 5, 60
        results = execute(
            funcs.stamped,
            [(times, x) for x in range(n)],
            executor="processes",
            n_jobs=2,
            chunksize=10,
            rate_limit=RateLimitPolicy(calls_per_second=rate, burst=burst),
        )
        assert results == list(range(n))
        stamps = [float(line) for line in funcs.lines(times)]
        assert len(stamps) == n
        # Slack: a chunk is sent when its tokens are taken but may start a little later, next to the
        # next one; at most one chunk per worker is in flight, chunk_cap = 1 item at 50/s: 2 calls.
        check_rate(stamps, rate, burst, slack=2)
        assert max(stamps) - min(stamps) >= (n - burst) / rate * 0.9  # paced, not merely bursty

    def test_the_dry_run_is_paced_too(self, tmp_path: Path) -> None:
        times = str(tmp_path / "times.txt")
        rate, burst, n = 40.0, 3, 30
        results = execute(
            funcs.stamped, [(times, x) for x in range(n)], rate_limit=RateLimitPolicy(rate, burst)
        )
        assert results == list(range(n))
        stamps = [float(line) for line in funcs.lines(times)]
        assert len(stamps) == n
        check_rate(stamps, rate, burst, slack=2)
