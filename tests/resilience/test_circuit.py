"""Circuit breaker: the state machine (fake clock), the decorator, and one state for a whole process pool."""

from __future__ import annotations

import doctest
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
import resilience_funcs as funcs

import amorsize.resilience.circuit as circuit_module
import amorsize.resilience.gate as gate_module
from amorsize import execute
from amorsize.errors import CircuitOpenError, ConfigurationError, ItemError
from amorsize.resilience.circuit import (
    CircuitBreaker,
    CircuitBreakerPolicy,
    CircuitState,
    ProtectedFunction,
    with_circuit_breaker,
)
from amorsize.resilience.dlq import DeadLetterQueue, DLQPolicy
from amorsize.run.hooks import RunHooks
from amorsize.run.report import ChunkRecord
from amorsize.run.runner import FAIL_FAST_BATCH

# Runs here may start worker processes (the planner picks the executor): a deadlock must fail.
pytestmark = pytest.mark.timeout(60)


def test_doctests() -> None:
    assert doctest.testmod(circuit_module).failed == 0
    assert doctest.testmod(gate_module).failed == 0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def breaker_with(clock: Clock, **policy: Any) -> CircuitBreaker:
    return CircuitBreaker(CircuitBreakerPolicy(**policy), clock=clock)


class TestStateMachine:
    def test_opens_after_consecutive_failures_only(self) -> None:
        breaker = breaker_with(Clock(), failure_threshold=3)
        for _ in range(2):
            breaker.record(ConnectionError())
        breaker.record(None)  # a success resets the count
        for _ in range(2):
            breaker.record(ConnectionError())
        assert breaker.state is CircuitState.CLOSED
        breaker.record(ConnectionError())
        assert breaker.state is CircuitState.OPEN
        assert breaker.acquire() == 0

    def test_unexpected_exceptions_do_not_count(self) -> None:
        breaker = breaker_with(Clock(), failure_threshold=1, expected_exceptions=(ConnectionError,))
        breaker.record(KeyError("bad input, not a down service"))
        assert breaker.state is CircuitState.CLOSED

    def test_half_open_lets_one_probe_through_then_closes(self) -> None:
        clock = Clock()
        closed: list[bool] = []
        opened: list[tuple[int, str]] = []
        breaker = breaker_with(
            clock,
            failure_threshold=2,
            success_threshold=2,
            timeout=30,
            on_open=lambda count, error: opened.append((count, str(error))),
            on_close=lambda: closed.append(True),
        )
        breaker.record(ConnectionError("one"))
        breaker.record(ConnectionError("two"))
        assert opened == [(2, "two")]
        clock.now = 29.9
        assert breaker.state is CircuitState.OPEN
        assert breaker.retry_after() == pytest.approx(0.1)
        clock.now = 30.0
        assert breaker.state is CircuitState.HALF_OPEN
        assert breaker.acquire() == 1
        assert breaker.acquire() == 0  # one probe at a time
        breaker.record(None)
        assert breaker.state is CircuitState.HALF_OPEN and not closed
        assert breaker.acquire() == 1
        breaker.record(None)
        assert breaker.state is CircuitState.CLOSED and closed == [True]

    def test_a_failed_probe_opens_it_again(self) -> None:
        clock = Clock()
        opened: list[int] = []
        breaker = breaker_with(clock, failure_threshold=1, timeout=5, on_open=lambda n, e: opened.append(n))
        breaker.record(ConnectionError())
        clock.now = 5
        assert breaker.acquire() == 1
        breaker.record(ConnectionError("still down"))
        assert breaker.state is CircuitState.OPEN and len(opened) == 2
        assert breaker.times_opened == 2
        clock.now = 9.9
        assert breaker.state is CircuitState.OPEN

    def test_stale_outcomes_do_not_move_it(self) -> None:
        clock = Clock()
        breaker = breaker_with(clock, failure_threshold=1, success_threshold=1, timeout=5)
        _, before = breaker.admit()  # a call let in while closed, still running when it opens
        breaker.record(ConnectionError("down"))
        clock.now = 5
        granted, probe = breaker.admit()
        assert granted == 1 and probe != before
        breaker.record(ConnectionError("stale: says how it was before"), before)
        assert breaker.state is CircuitState.HALF_OPEN
        breaker.record(None, probe)
        assert breaker.state is CircuitState.CLOSED

    def test_released_probe_can_be_taken_again(self) -> None:
        clock = Clock()
        breaker = breaker_with(clock, failure_threshold=1, timeout=1)
        breaker.record(ConnectionError())
        clock.now = 1
        assert breaker.acquire() == 1
        breaker.release()
        assert breaker.acquire() == 1

    def test_call_refuses_with_a_clear_error(self) -> None:
        breaker = breaker_with(Clock(), failure_threshold=1, timeout=60)
        with pytest.raises(ValueError):
            breaker.call(int, "x")
        with pytest.raises(CircuitOpenError, match=r"open after 1 consecutive failure \(last: ValueError"):
            breaker.call(int, "1")

    def test_reset_and_pickle_give_a_closed_breaker(self) -> None:
        breaker = breaker_with(Clock(), failure_threshold=1)
        breaker.record(ConnectionError())
        copy = pickle.loads(pickle.dumps(CircuitBreaker(CircuitBreakerPolicy(failure_threshold=1))))
        assert copy.state is CircuitState.CLOSED
        breaker.reset()
        assert breaker.state is CircuitState.CLOSED and breaker.failure_count == 0

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"failure_threshold": 0}, "failure_threshold must be an integer >= 1 (got 0)"),
            ({"success_threshold": True}, "success_threshold must be an integer >= 1 (got True)"),
            ({"timeout": -1}, "timeout must be a number of seconds >= 0 (got -1)"),
            ({"expected_exceptions": (int,)}, "expected_exceptions must be an exception class"),
            ({"on_open": "log"}, "on_open must be callable or None"),
        ],
    )
    def test_bad_policies_say_what(self, kwargs: dict[str, Any], message: str) -> None:
        with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace(")", r"\)")):
            CircuitBreakerPolicy(**kwargs)


class TestDecorator:
    def test_forms(self) -> None:
        assert isinstance(with_circuit_breaker(abs), ProtectedFunction)
        assert with_circuit_breaker()(abs)(-1) == 1
        shared = CircuitBreaker(CircuitBreakerPolicy(failure_threshold=1))
        first, second = with_circuit_breaker(shared)(int), with_circuit_breaker(shared)(float)
        with pytest.raises(ValueError):
            first("x")
        with pytest.raises(CircuitOpenError):  # the breaker is shared: the service is down for both
            second("1.5")
        with pytest.raises(ConfigurationError, match="takes a CircuitBreakerPolicy"):
            with_circuit_breaker(42)  # type: ignore[call-overload]


def down_service(tmp_path: Path, n: int) -> tuple[str, str, list[tuple[str, str, int]]]:
    calls, up = str(tmp_path / "calls.txt"), str(tmp_path / "up")
    return calls, up, [(calls, up, x) for x in range(n)]


@pytest.mark.timeout(60)
class TestSharedAcrossWorkers:
    """The acceptance test: a down service sees about failure_threshold + n_jobs calls, not per worker."""

    @pytest.mark.parametrize("n_jobs", [2, 3])
    def test_a_down_service_gets_at_most_threshold_plus_workers_calls(
        self, tmp_path: Path, n_jobs: int
    ) -> None:
        calls, _, items = down_service(tmp_path, 300)
        opened: list[int] = []
        threshold = 5
        results, report = execute(
            funcs.service,
            items,
            executor="processes",
            n_jobs=n_jobs,
            chunksize=50,  # the plan's chunk size; a breaker sends one item per chunk regardless
            circuit_breaker=CircuitBreakerPolicy(
                failure_threshold=threshold, on_open=lambda n, e: opened.append(n)
            ),
            on_error="collect",
            return_report=True,
        )
        n_calls = len(funcs.lines(calls))
        # When the threshold-th failure reaches the parent, at most n_jobs - 1 other items are in
        # flight (one item per chunk, n_jobs items in flight at most): each may still call once.
        assert threshold <= n_calls <= threshold + n_jobs - 1
        assert opened == [threshold]
        assert results == [None] * 300
        assert report.n_failed == 300
        assert report.n_failed_fast == 300 - n_calls
        assert report.initial_chunksize == 1
        fast = [f for f in report.failures if isinstance(f.error, CircuitOpenError)]
        assert len(fast) == 300 - n_calls

    def test_half_open_probe_then_close_then_everything_runs(self, tmp_path: Path) -> None:
        _, up, items = down_service(tmp_path, 600)
        clock = Clock()
        closed: list[bool] = []
        breaker = CircuitBreaker(
            CircuitBreakerPolicy(
                failure_threshold=3, success_threshold=2, timeout=10, on_close=lambda: closed.append(True)
            ),
            clock=clock,
        )

        class Recover(RunHooks):
            """After the first batch failed fast: the service comes back and the timeout passes."""

            def on_chunk_done(self, chunk: ChunkRecord) -> None:
                if chunk.chunk_id == -1 and not os.path.exists(up):
                    Path(up).touch()
                    clock.now += 10

        results, report = execute(
            funcs.service,
            items,
            executor="processes",
            n_jobs=2,
            chunksize=1,
            circuit_breaker=breaker,
            on_error="collect",
            hooks=[Recover()],
            return_report=True,
        )
        assert closed == [True] and breaker.state is CircuitState.CLOSED
        assert report.n_failed_fast == FAIL_FAST_BATCH
        # Failed: the first calls (threshold), then one batch at once; an item still in flight when
        # the service came back may have succeeded in between. After the batch, everything succeeds.
        last_failed = max(i for i, r in enumerate(results) if r is None)
        assert last_failed < 3 + 2 + FAIL_FAST_BATCH
        assert results[last_failed + 1 :] == [x * 2 for x in range(last_failed + 1, 600)]
        assert report.n_failed == results.count(None)

    def test_decorated_function_has_its_breaker_lifted_into_the_parent(self, tmp_path: Path) -> None:
        calls, _, items = down_service(tmp_path, 100)
        protected = with_circuit_breaker(CircuitBreakerPolicy(failure_threshold=4))(funcs.service)
        results = execute(protected, items, executor="processes", n_jobs=2, chunksize=10, on_error="collect")
        assert results == [None] * 100
        assert len(funcs.lines(calls)) <= 4 + 1
        assert protected.breaker.state is CircuitState.OPEN

    def test_open_breaker_fails_items_fast_into_the_dead_letter_queue(self, tmp_path: Path) -> None:
        calls, _, items = down_service(tmp_path, 20)
        breaker = CircuitBreaker(CircuitBreakerPolicy(failure_threshold=1))
        breaker.record(ConnectionError("already known down"))
        dlq = DeadLetterQueue(DLQPolicy(directory=tmp_path / "dlq"))
        results = execute(
            funcs.service,
            items,
            executor="threads",
            n_jobs=2,
            chunksize=1,
            circuit_breaker=breaker,
            on_error="dlq",
            dlq=dlq,
            placeholder=-1,
        )
        assert results == [-1] * 20 and funcs.lines(calls) == []
        summary = dlq.get_summary()
        assert summary.error_types == {"CircuitOpenError": 20}
        assert sorted(e.metadata["index"] for e in dlq.get_entries()) == list(range(20))

    def test_raise_mode_raises_circuit_open(self, tmp_path: Path) -> None:
        _, _, items = down_service(tmp_path, 5)
        breaker = CircuitBreaker(CircuitBreakerPolicy(failure_threshold=1))
        breaker.record(ConnectionError("down"))
        with pytest.raises(CircuitOpenError, match="circuit breaker is open"):
            execute(funcs.service, items, executor="serial", n_jobs=1, chunksize=1, circuit_breaker=breaker)
        breaker.reset()
        with pytest.raises(ItemError, match="item 0 raised ServiceDown"):
            execute(funcs.service, items, executor="serial", n_jobs=1, chunksize=1, circuit_breaker=breaker)

    def test_the_dry_run_goes_through_the_breaker(self, tmp_path: Path) -> None:
        calls, _, items = down_service(tmp_path, 400)
        results, report = execute(
            funcs.service,
            items,
            circuit_breaker=CircuitBreakerPolicy(failure_threshold=3),
            on_error="collect",
            return_report=True,
            # the run may start max_workers calls while the breaker is still closed (when the dry
            # run stopped after one failure: a loaded machine can make the probe look not worth it)
            max_workers=2,
        )
        assert results == [None] * 400
        # The dry run calls serially, then its probe from two threads: when the third failure
        # opens the breaker, at most one other call is in flight.
        assert len(funcs.lines(calls)) <= 3 + 1
        assert report.n_failed == 400


def test_decorated_and_explicit_breakers_are_not_both_allowed() -> None:
    with pytest.raises(ConfigurationError, match="decorated with with_circuit_breaker"):
        execute(with_circuit_breaker()(abs), [1], circuit_breaker=CircuitBreakerPolicy())


def test_bad_option_type_is_named() -> None:
    with pytest.raises(
        ConfigurationError, match="circuit_breaker must be a CircuitBreakerPolicy or CircuitBreaker"
    ):
        execute(abs, [1], circuit_breaker=5)  # type: ignore[arg-type]
