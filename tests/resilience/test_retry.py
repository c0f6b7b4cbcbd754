"""Retry: the policy's schedule, the tenacity loop (fake sleep), and item-level retry in real workers."""

from __future__ import annotations

import doctest
import pickle
from collections.abc import Callable
from typing import Any

import cloudpickle
import pytest
import resilience_funcs as funcs

import amorsize.resilience.retry as retry_module
from amorsize import execute
from amorsize.errors import ConfigurationError, ItemError
from amorsize.resilience.dlq import DeadLetterQueue, DLQPolicy
from amorsize.resilience.retry import (
    RETRIES_ATTRIBUTE,
    RetryingFunction,
    RetryPolicy,
    retries_of,
    unwrap_retry,
    with_retry,
)

# Runs here may start worker processes (the planner picks the executor): a deadlock must fail.
pytestmark = pytest.mark.timeout(60)


def test_doctests() -> None:
    assert doctest.testmod(retry_module).failed == 0


class TestRetryPolicy:
    def test_schedule_is_exponential_and_capped(self) -> None:
        policy = RetryPolicy(initial_delay=0.1, exponential_base=2, max_delay=0.5, jitter=False)
        assert [policy.delay(n) for n in range(1, 6)] == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])

    def test_equal_jitter_keeps_at_least_half(self) -> None:
        policy = RetryPolicy(initial_delay=1.0, jitter=True)
        assert policy.delay(2, uniform=lambda a, b: a) == 1.0
        assert policy.delay(2, uniform=lambda a, b: b) == 2.0

    def test_huge_exponents_stay_at_the_cap(self) -> None:
        assert RetryPolicy(jitter=False, max_delay=7).delay(100_000) == 7

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"max_retries": -1}, "max_retries must be an integer >= 0 (got -1)"),
            ({"max_retries": 1.5}, "max_retries must be an integer >= 0 (got 1.5)"),
            ({"initial_delay": -0.1}, "initial_delay must be a finite number >= 0 (got -0.1)"),
            ({"exponential_base": 0.5}, "exponential_base must be a finite number >= 1 (got 0.5)"),
            ({"initial_delay": 2.0, "max_delay": 1.0}, "max_delay (1.0) must be >= initial_delay (2.0)"),
            ({"retry_on_exceptions": ("x",)}, "retry_on_exceptions must be an exception class"),
            ({"on_retry": 3}, "on_retry must be a callable"),
        ],
    )
    def test_bad_fields_say_what_and_how(self, kwargs: dict[str, Any], message: str) -> None:
        with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace(")", r"\)")):
            RetryPolicy(**kwargs)

    def test_a_single_exception_class_is_accepted(self) -> None:
        assert RetryPolicy(retry_on_exceptions=KeyError).retry_on_exceptions == (KeyError,)


class FakeSleep:
    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


class TestWithRetry:
    def test_retries_until_success_with_the_schedule(self) -> None:
        sleep = FakeSleep()
        seen: list[tuple[str, int, float]] = []
        outcomes = iter([ConnectionError("a"), ConnectionError("b"), "ok"])

        def call(_: Any) -> str:
            outcome = next(outcomes)
            if isinstance(outcome, Exception):
                raise outcome
            return outcome

        wrapped = with_retry(
            max_retries=3,
            initial_delay=0.5,
            jitter=False,
            on_retry=lambda error, attempt, delay: seen.append((str(error), attempt, delay)),
            sleep=sleep,
        )(call)
        assert wrapped(None) == "ok"
        assert sleep.waits == [0.5, 1.0]
        assert seen == [("a", 1, 0.5), ("b", 2, 1.0)]

    def test_final_failure_is_the_original_with_its_retry_count(self) -> None:
        sleep = FakeSleep()

        def always(_: Any) -> None:
            raise TimeoutError("still down")

        wrapped = with_retry(max_retries=2, initial_delay=0.0, sleep=sleep)(always)
        with pytest.raises(TimeoutError, match="still down") as caught:
            wrapped(1)
        assert getattr(caught.value, RETRIES_ATTRIBUTE) == 2
        assert retries_of(caught.value) == 2
        assert len(sleep.waits) == 2

    def test_other_exceptions_fail_at_once(self) -> None:
        sleep = FakeSleep()
        wrapped = with_retry(retry_on_exceptions=ConnectionError, sleep=sleep)(lambda x: 1 // x)
        with pytest.raises(ZeroDivisionError) as caught:
            wrapped(0)
        assert retries_of(caught.value) == 0
        assert sleep.waits == []

    def test_bare_decorator_and_policy_forms(self) -> None:
        assert with_retry(abs)(-2) == 2
        policy = RetryPolicy(max_retries=1)
        wrapped = with_retry(policy=policy)(abs)
        assert isinstance(wrapped, RetryingFunction) and wrapped.policy is policy
        assert unwrap_retry(with_retry(wrapped)) is abs
        assert wrapped.__name__ == "abs"

    def test_policy_and_fields_together_are_refused(self) -> None:
        with pytest.raises(ConfigurationError, match="both policy= and max_retries"):
            with_retry(policy=RetryPolicy(), max_retries=2)

    def test_wrapper_pickles_without_its_thread_state(self) -> None:
        wrapped = with_retry(max_retries=1)(lambda x: x + 1)
        assert wrapped(1) == 2  # builds this thread's tenacity loop
        copy = cloudpickle.loads(cloudpickle.dumps(wrapped))
        assert copy(41) == 42
        plain = with_retry(max_retries=1)(abs)
        assert pickle.loads(pickle.dumps(plain))(-3) == 3


@pytest.mark.timeout(60)
class TestInWorkers:
    @pytest.mark.parametrize("start_method", ["fork", "spawn"])
    def test_execute_retries_each_item_in_its_worker(self, calls: str, start_method: str) -> None:
        items = [(calls, 2, x) for x in range(6)]
        results = execute(
            funcs.flaky,
            items,
            executor="processes",
            n_jobs=2,
            chunksize=2,
            start_method=start_method,
            retry=RetryPolicy(max_retries=2, initial_delay=0.001, retry_on_exceptions=(funcs.ServiceDown,)),
        )
        assert results == [x * 10 for x in range(6)]
        assert sorted(funcs.lines(calls)) == sorted(str(x) for x in range(6) for _ in range(3))

    def test_decorated_module_function_runs_under_spawn(self, calls: str) -> None:
        results = execute(
            funcs.decorated_flaky,
            [(calls, 1, x) for x in range(4)],
            executor="processes",
            n_jobs=2,
            chunksize=1,
            start_method="spawn",
        )
        assert results == [0, 10, 20, 30]

    def test_retry_count_of_a_final_failure_reaches_the_dead_letter(self, calls: str, state_dir: Any) -> None:
        dlq = DeadLetterQueue(DLQPolicy(directory=state_dir))
        results = execute(
            funcs.flaky,
            [(calls, 0, 1), (calls, 5, 2), (calls, 1, 3)],
            executor="processes",
            n_jobs=2,
            chunksize=1,
            retry=RetryPolicy(max_retries=3, initial_delay=0.0),
            on_error="dlq",
            dlq=dlq,
            placeholder="FAILED",
        )
        assert results == [10, "FAILED", 30]
        (entry,) = dlq.get_entries()
        assert entry.item == (calls, 5, 2)
        assert entry.retry_count == 3
        assert entry.error_type == "ServiceDown"
        assert "attempt 4 for 2" in entry.error_message
        assert "ServiceDown" in entry.traceback
        assert funcs.attempts(calls, 2) == 4

    def test_raise_mode_names_the_item_after_the_retries(self, calls: str) -> None:
        with pytest.raises(ItemError, match="item 1 raised ServiceDown") as caught:
            execute(
                funcs.flaky,
                [(calls, 0, 0), (calls, 9, 1)],
                executor="threads",
                n_jobs=2,
                chunksize=1,
                retry=RetryPolicy(max_retries=1, initial_delay=0.0),
            )
        assert retries_of(caught.value.__cause__) == 1  # type: ignore[arg-type]


def test_tenacity_is_imported_only_once_an_item_is_retried(fresh_python: Callable[..., str]) -> None:
    # tenacity imports asyncio (~4 MB of every process and worker, 10-25 ms of `import amorsize`)
    out = fresh_python(
        """
        import sys
        from amorsize import RetryPolicy, execute, with_retry
        execute(abs, range(100), executor="serial", retry=RetryPolicy(max_retries=2))
        print("tenacity" in sys.modules)
        calls = []
        def flaky(x):
            calls.append(x)
            if len(calls) == 1:
                raise OSError("once")
            return x
        print(with_retry(flaky, initial_delay=0.0)(7), "tenacity" in sys.modules)
        """
    )
    assert out.split() == ["False", "7", "True"], out
