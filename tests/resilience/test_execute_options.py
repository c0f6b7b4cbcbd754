"""execute/imap resilience options: the shape of "collect", the dry run's failures, eager checks, exports."""

from __future__ import annotations

import pytest
import resilience_funcs as funcs

import amorsize
from amorsize import execute, imap
from amorsize.errors import ConfigurationError, SamplingError
from amorsize.resilience.dlq import DeadLetterQueue
from amorsize.resilience.retry import RetryPolicy, with_retry

# Runs here may start worker processes (the planner picks the executor): a deadlock must fail.
pytestmark = pytest.mark.timeout(60)


class TestCollect:
    def test_results_hold_the_placeholder_and_the_report_the_errors(self, calls: str) -> None:
        items = [(calls, x) for x in (3, -1, 4, -5)]
        results, report = execute(
            funcs.bad_when_negative, items, on_error="collect", placeholder="?", return_report=True
        )
        assert results == [4, "?", 5, "?"]
        assert [(f.index, type(f.error).__name__) for f in report.failures] == [
            (1, "BadRecord"),
            (3, "BadRecord"),
        ]
        assert "BadRecord" in report.failures[0].traceback
        assert report.n_failed == 2 and not report.ok
        assert "2 items failed" in report.summary()

    def test_without_resilience_a_dry_run_failure_still_raises_sampling_error(self, calls: str) -> None:
        with pytest.raises(SamplingError, match="on item 1 during the dry run"):
            execute(funcs.bad_when_negative, [(calls, 1), (calls, -1)])


class TestEagerChecks:
    def test_imap_checks_its_options_before_the_first_result(self) -> None:
        with pytest.raises(ConfigurationError, match="dlq= is used only with on_error='dlq'"):
            imap(abs, [1], dlq=DeadLetterQueue())
        with pytest.raises(ConfigurationError, match="retry must be a RetryPolicy"):
            imap(abs, [1], retry=3)  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="rate_limit must be a RateLimitPolicy"):
            execute(abs, [1], rate_limit=10)  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="keep_checkpoint must be True or False"):
            execute(abs, [1], checkpoint="x", keep_checkpoint="yes")  # type: ignore[arg-type]

    def test_one_retry_layer_only(self) -> None:
        with pytest.raises(ConfigurationError, match="decorated with with_retry and retry= was given too"):
            execute(with_retry(abs), [1], retry=RetryPolicy())


def test_seed_names_are_exported() -> None:
    for name in (
        "RetryPolicy",
        "with_retry",
        "CircuitBreakerPolicy",
        "CircuitBreaker",
        "CircuitState",
        "with_circuit_breaker",
        "RateLimitPolicy",
        "CheckpointManager",
        "CheckpointPolicy",
        "CheckpointState",
        "get_pending_items",
        "merge_results",
        "DeadLetterQueue",
        "DeadLetterEntry",
        "DLQPolicy",
        "DLQFormat",
        "replay_failed_items",
    ):
        assert name in amorsize.__all__, name
        assert getattr(amorsize, name) is not None
