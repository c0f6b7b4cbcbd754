"""One run's resilience options, turned into what the planner and the runner use (the API's wiring).

::

    execute/imap(func, data, retry=, circuit_breaker=, rate_limit=, checkpoint=, on_error=, dlq=)
      │
      ├─ Resilience(...)         checks every option; lifts a @with_circuit_breaker function's breaker
      │                          into the parent; wraps func for retry (worker_func)
      ├─ with session:           opens the checkpoint: resuming? its plan is forced (no dry run)
      ├─ dry_run_func            the dry run goes through the gate; failures come back as results
      ├─ planned(candidate, …)   checkpoint header, dry-run results committed
      ├─ runner_options(n)       on_error for the runner, gate, on_outcome (commit, dead letters),
      │                          precomputed results (dry run or checkpoint) and their check
      └─ finish / completed      report relabelled; data-length check; checkpoint deleted when done
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import ExitStack
from types import TracebackType
from typing import Any, Literal

from amorsize.errors import ConfigurationError
from amorsize.measure.identity import function_key, function_name
from amorsize.measure.sampler import input_length
from amorsize.resilience.checkpoint import RunCheckpoint
from amorsize.resilience.circuit import CircuitBreaker, CircuitBreakerPolicy, unwrap_breaker
from amorsize.resilience.dlq import DeadLetterQueue
from amorsize.resilience.gate import GuardedFunction, RunGate
from amorsize.resilience.ratelimit import RateLimitPolicy, TokenBucket
from amorsize.resilience.retry import RetryingFunction, RetryPolicy, unwrap_retry
from amorsize.run.backend import ItemFailure
from amorsize.run.report import RunReport
from amorsize.run.runner import OutcomeSink

__all__ = ["ON_ERROR_POLICIES", "OnErrorPolicy", "Resilience"]

OnErrorPolicy = Literal["raise", "collect", "dlq"]
ON_ERROR_POLICIES: tuple[str, ...] = ("raise", "collect", "dlq")


def _check_type(name: str, value: Any, kinds: tuple[type, ...], example: str) -> None:
    if value is not None and not isinstance(value, kinds):
        names = " or ".join(kind.__name__ for kind in kinds)
        raise ConfigurationError(
            f"{name} must be a {names} or None, e.g. {example} (got {type(value).__name__})"
        )


class Resilience:
    """The resilience of one run (see the module docstring); a context manager around the run.

    Args:
        func: the user's function (possibly decorated with ``with_retry``/``with_circuit_breaker``).
        data: the input (its length, when it has one, is recorded in a checkpoint).
        on_error: ``"raise"``, ``"collect"`` or ``"dlq"``.
        placeholder: the result at a failed position (collect, dlq).
        retry, circuit_breaker, rate_limit, checkpoint, keep_checkpoint, force_resume, dlq: as in
            :func:`amorsize.execute`.

    Raises:
        ConfigurationError: an option of the wrong type or out of range, or options that do not go
            together (the message says which and how to fix it).
    """

    def __init__(
        self,
        func: Callable[[Any], Any],
        data: Iterable[Any],
        *,
        on_error: str = "raise",
        placeholder: Any = None,
        retry: RetryPolicy | None = None,
        circuit_breaker: CircuitBreakerPolicy | CircuitBreaker | None = None,
        rate_limit: RateLimitPolicy | None = None,
        checkpoint: str | os.PathLike[str] | None = None,
        keep_checkpoint: bool = False,
        force_resume: bool = False,
        dlq: DeadLetterQueue | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if on_error not in ON_ERROR_POLICIES:
            raise ConfigurationError(
                f"on_error must be 'raise', 'collect' or 'dlq' (got {on_error!r}): 'raise' stops at the "
                "first failure, 'collect' puts the placeholder at failed positions and the errors in the "
                "report, 'dlq' also adds the failed items to a dead-letter queue"
            )
        _check_type("retry", retry, (RetryPolicy,), "RetryPolicy(max_retries=3)")
        _check_type(
            "circuit_breaker",
            circuit_breaker,
            (CircuitBreakerPolicy, CircuitBreaker),
            "CircuitBreakerPolicy(failure_threshold=5)",
        )
        _check_type("rate_limit", rate_limit, (RateLimitPolicy,), "RateLimitPolicy(calls_per_second=10)")
        _check_type("dlq", dlq, (DeadLetterQueue,), "DeadLetterQueue()")
        if checkpoint is not None and not isinstance(checkpoint, (str, os.PathLike)):
            raise ConfigurationError(
                "checkpoint must be a name such as 'nightly' or a path such as './state/job.sqlite3' "
                f"(got {type(checkpoint).__name__})"
            )
        if dlq is not None and on_error != "dlq":
            raise ConfigurationError(
                f"dlq= is used only with on_error='dlq' (got on_error={on_error!r}); pass on_error='dlq'"
            )
        for name, value in (("keep_checkpoint", keep_checkpoint), ("force_resume", force_resume)):
            if not isinstance(value, bool):
                raise ConfigurationError(f"{name} must be True or False (got {value!r})")
            if value and checkpoint is None:
                raise ConfigurationError(f"{name}=True needs a checkpoint= to apply to")

        inner, lifted = unwrap_breaker(func)
        if lifted is not None and circuit_breaker is not None:
            raise ConfigurationError(
                "func is decorated with with_circuit_breaker and circuit_breaker= was given too; use one"
            )
        if retry is not None and isinstance(inner, RetryingFunction):
            raise ConfigurationError(
                "func is decorated with with_retry and retry= was given too (each failure would be "
                "retried by both); use one"
            )
        if isinstance(circuit_breaker, CircuitBreakerPolicy):
            self.breaker: CircuitBreaker | None = CircuitBreaker(circuit_breaker)
        else:
            self.breaker = circuit_breaker if circuit_breaker is not None else lifted
        bucket = TokenBucket(rate_limit) if rate_limit is not None else None
        has_gate = self.breaker is not None or bucket is not None
        self.gate = RunGate(breaker=self.breaker, bucket=bucket, sleep=sleep) if has_gate else None
        #: What workers run: the function (its breaker lifted out), retried if asked.
        self.worker_func: Callable[[Any], Any] = RetryingFunction(inner, retry, sleep) if retry else inner
        #: The function whose identity keys the checkpoint and the run history.
        self.key_func: Callable[[Any], Any] = unwrap_retry(inner)
        self.on_error = on_error
        self.placeholder = placeholder
        self.dlq = dlq if dlq is not None or on_error != "dlq" else DeadLetterQueue()
        self._data = data
        self._checkpoint_spec = checkpoint
        self._keep = keep_checkpoint
        self._force = force_resume
        self.checkpoint: RunCheckpoint | None = None
        self._stack = ExitStack()

    # -- the run's phases -------------------------------------------------------------------------

    def __enter__(self) -> Resilience:
        if self._checkpoint_spec is not None:
            self.checkpoint = self._stack.enter_context(
                RunCheckpoint.open(
                    self._checkpoint_spec,
                    function_key=function_key(self.key_func),
                    function_name=function_name(self.key_func),
                    n_items=input_length(self._data),
                    force=self._force,
                )
            )
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stack.close()

    @property
    def dry_run_func(self) -> Callable[[Any], Any]:
        """The function the dry run calls: through the gate; failures returned as results.

        Failures come back as markers (the runner then fails their items by the run's policy) under
        collect and dlq, and with a checkpoint even under raise: the dry run's successes are then
        committed before the run raises :class:`~amorsize.errors.ItemError` for the failed item.
        """
        collect = self.on_error != "raise" or self._checkpoint_spec is not None
        if self.gate is None and not collect:
            return self.worker_func
        return GuardedFunction(self.worker_func, self.gate, collect=collect)

    @property
    def dry_run_probe_threads(self) -> int | None:
        """Most threads the dry run's probe may call ``func`` from at once: 2 behind a breaker or
        rate limit (as many calls as the gate can be asked about at a time), else the sampler's own."""
        return None if self.gate is None else 2

    @property
    def dry_run_clock(self) -> Callable[[], float]:
        """The clock the dry run times calls with: without the rate limit's waits, when there is one."""
        if self.gate is not None and self.gate.bucket is not None:
            return self.gate.dry_run_clock
        return time.perf_counter

    def forced_plan(self) -> dict[str, Any]:
        """``executor``/``n_jobs``/``chunksize`` of the checkpoint being resumed (empty otherwise)."""
        if self.checkpoint is None or not self.checkpoint.resumed or not self.checkpoint.plan:
            return {}
        plan = self.checkpoint.plan
        return {key: plan[key] for key in ("executor", "n_jobs", "chunksize") if key in plan}

    def planned(
        self,
        executor: str,
        n_jobs: int,
        chunksize: int,
        items: Sequence[Any],
        results: Sequence[Any],
        later: Sequence[tuple[int, Any, Any]] = (),
    ) -> None:
        """The plan is made: record the checkpoint's header and commit the dry run's results.

        ``items``/``results`` are the leading ones (positions 0, 1, …); ``later`` holds
        ``(position, item, result)`` of those the dry run took further along the input.
        """
        if self.checkpoint is None:
            return
        self.checkpoint.begin({"executor": executor, "n_jobs": n_jobs, "chunksize": chunksize})
        if self.checkpoint.resumed:
            return
        blocks = [(position, [item], [result]) for position, item, result in later]
        self.checkpoint.commit_precomputed([(0, items, results), *blocks])

    def runner_options(
        self,
        n_workers: int,
        chunksize: int,
        precomputed: Sequence[Any] | Mapping[int, Any] | None,
        *,
        chunksize_forced: bool = False,
    ) -> dict[str, Any]:
        """Keyword arguments for :class:`~amorsize.run.runner.Runner` besides the backend and the input.

        Args:
            n_workers: the backend's workers.
            chunksize: the plan's chunk size (a breaker makes it 1, a rate limit caps it).
            precomputed: the dry run's results, if any.
            chunksize_forced: the user gave the chunk size: keep it for the whole run.
        """
        if self.gate is not None:
            self.gate.n_workers = max(1, n_workers)
        adaptive = not chunksize_forced
        if self.breaker is not None:
            chunksize, adaptive = 1, False  # see amorsize.resilience.gate: one item per chunk
        elif self.gate is not None and self.gate.bucket is not None:  # the gate caps every chunk
            chunksize, adaptive = min(chunksize, self.gate.bucket.policy.chunk_cap), False
        options: dict[str, Any] = {
            "chunksize": chunksize,
            "adaptive": adaptive,
            "on_error": "raise" if self.on_error == "raise" else "collect",
            "placeholder": self.placeholder,
            "gate": self.gate,
            "on_outcome": self._sink(),
            "precomputed": precomputed,
        }
        if self.checkpoint is not None and self.checkpoint.resumed:
            options.update(precomputed=self.checkpoint.results, check_precomputed=self.checkpoint.check)
        return options

    def _sink(self) -> OutcomeSink | None:
        checkpoint, dlq = self.checkpoint, self.dlq
        if checkpoint is None and dlq is None:
            return None
        metadata = {"function": function_name(self.key_func)}
        if checkpoint is not None:
            metadata["checkpoint"] = checkpoint.location.describe()

        def on_outcome(
            start: int, items: Sequence[Any], results: Sequence[Any], failures: Sequence[ItemFailure]
        ) -> None:
            if checkpoint is not None:
                checkpoint.commit(start, items, results, failures)
            if dlq is not None and failures:
                dlq.add_failures(start, items, failures, metadata)

        return on_outcome

    def history_fields(self) -> dict[str, Any]:
        """Fields for the run's history record: whether a gate set the pace, results resumed.

        A paced run's wall time reflects the breaker or the rate limit, not the machine's costs;
        a resumed run skipped work it never timed: calibration should not learn from either.
        """
        fields: dict[str, Any] = {}
        if self.gate is not None:
            fields["paced"] = True
        if self.checkpoint is not None and self.checkpoint.resumed:
            fields["items_from_checkpoint"] = len(self.checkpoint.results)
        return fields

    def finish(self, report: RunReport) -> RunReport:
        """The run's report, with results taken from a checkpoint counted as such."""
        if self.checkpoint is not None and self.checkpoint.resumed:
            return dataclasses.replace(
                report, items_from_checkpoint=report.items_from_dry_run, items_from_dry_run=0
            )
        return report

    def completed(self, report: RunReport) -> None:
        """After a run that went through its input: check the data's length; delete a done checkpoint.

        Raises:
            CheckpointMismatchError: the data ended before positions the checkpoint holds.
        """
        if self.checkpoint is not None:
            self.checkpoint.finish(
                n_results=report.n_items,
                completed=report.status == "completed",
                ok=report.n_failed == 0,
                keep=self._keep,
            )
