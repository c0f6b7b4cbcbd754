"""The runner's own behaviour, against a backend double with made-up durations (no real waiting).

The double, :class:`FakeBackend`, wraps the plain function: it runs each chunk inside ``submit`` and
reports a duration computed from the items (``cost``), so adaptation is deterministic. With
``delay`` it resolves futures from timer threads instead, to reorder completions.
"""

from __future__ import annotations

import collections
import contextlib
import doctest
import io
import itertools
import math
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, InvalidStateError
from types import TracebackType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

import amorsize.run.hooks as hooks_module
import amorsize.run.report as report_module
import amorsize.run.runner as runner_module
from amorsize.core.chunking import TAIL_SECONDS_PER_WORKER, TAIL_SPLIT
from amorsize.core.types import ExecutorKind
from amorsize.errors import ConfigurationError, ExecutionError, ItemError, ItemTimeoutError, WorkerDiedError
from amorsize.run.backend import ChunkOutcome, ChunkTask, FunctionRef, ItemFailure
from amorsize.run.backends.serial import SerialBackend
from amorsize.run.hooks import ProgressBar, RunHooks, RunInfo
from amorsize.run.report import ChunkRecord, RunReport
from amorsize.run.runner import MAX_CHUNK_RECORDS, READY_SLACK, Runner

pytestmark = pytest.mark.timeout(20)


class Boom(ValueError):
    """The test functions' own exception."""


class TimesOut:
    """An item the double treats as having run over ``item_timeout`` (the chunk stops there)."""

    def __repr__(self) -> str:
        return "TimesOut()"


class Dies:
    """An item on which the double reports a worker death."""


class FakeBackend:
    """Runs chunks inline, reporting ``duration = sum(cost(item))``; records what it was asked.

    Args:
        n_workers: how many workers it claims to have (shapes the window and the tail rule).
        cost: made-up seconds per item.
        delay: when given, seconds after which each chunk's future resolves (from a timer thread).
        n_done_override: when given, the ``n_done`` reported for every chunk (to break the contract).
    """

    kind: ExecutorKind = "serial"

    def __init__(
        self,
        n_workers: int = 1,
        *,
        cost: Callable[[Any], float] = lambda item: 0.0,
        delay: Callable[[ChunkTask], float] | None = None,
        n_done_override: int | None = None,
    ) -> None:
        self._n_workers = n_workers
        self.cost = cost
        self.delay = delay
        self.n_done_override = n_done_override
        self.tasks: list[ChunkTask] = []
        self.aborts = 0
        self.closed = False
        self._pending: list[tuple[threading.Timer, Future[ChunkOutcome]]] = []

    @property
    def n_workers(self) -> int:
        return self._n_workers

    @property
    def sizes(self) -> list[int]:
        return [len(t.items) for t in self.tasks]

    def submit(self, task: ChunkTask) -> Future[ChunkOutcome]:
        self.tasks.append(task)
        outcome = self._run(task)
        future: Future[ChunkOutcome] = Future()
        if self.delay is None:
            future.set_result(outcome)
        else:
            timer = threading.Timer(self.delay(task), self._resolve, (future, outcome))
            timer.daemon = True
            self._pending.append((timer, future))
            timer.start()
        return future

    @staticmethod
    def _resolve(future: Future[ChunkOutcome], outcome: ChunkOutcome) -> None:
        with contextlib.suppress(InvalidStateError):  # cancelled by abort meanwhile
            future.set_result(outcome)

    def _run(self, task: ChunkTask) -> ChunkOutcome:
        results: list[Any] = []
        failures: list[ItemFailure] = []
        duration = 0.0
        for pos, item in enumerate(task.items):
            index = task.start + pos
            duration += self.cost(item)
            if isinstance(item, TimesOut):
                results.append(None)
                failures.append(ItemFailure(index, ItemTimeoutError(index, 1.0)))
                break
            if isinstance(item, Dies):
                results.append(None)
                failures.append(ItemFailure(index, WorkerDiedError(-9, [index], pid=4242)))
                break
            try:
                results.append(task.func.func(item))
            except Exception as error:
                results.append(None)
                failures.append(ItemFailure(index, error, "".join(traceback.format_exception(error))))
                if task.stop_on_error:
                    break
        n_done = len(results) if self.n_done_override is None else self.n_done_override
        return ChunkOutcome(
            chunk_id=task.chunk_id,
            start=task.start,
            results=results,
            failures=tuple(failures),
            n_done=n_done,
            duration=duration,
            worker="fake:0",
        )

    def abort(self) -> None:
        self.aborts += 1
        for timer, future in self._pending:
            timer.cancel()
            future.cancel()
        self._pending.clear()

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> FakeBackend:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class Recorder(RunHooks):
    """Records every hook call as (name, argument)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def on_run_start(self, info: RunInfo) -> None:
        self.calls.append(("start", info))

    def on_chunk_done(self, chunk: ChunkRecord) -> None:
        self.calls.append(("chunk", chunk))

    def on_item_error(self, failure: ItemFailure) -> None:
        self.calls.append(("error", failure))

    def on_run_end(self, report: RunReport) -> None:
        self.calls.append(("end", report))

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


class PullCounter:
    """A generator over ``range(n)`` that counts how far it has been pulled."""

    def __init__(self, n: int | None) -> None:
        self.n = n
        self.pulled = 0

    def __iter__(self) -> Iterator[int]:
        for i in itertools.count() if self.n is None else range(self.n):
            self.pulled += 1
            yield i


def double(x: int) -> int:
    return 2 * x


def fail_on_3(x: int) -> int:
    if x == 3:
        raise Boom(f"bad item {x}")
    return x


def test_docstring_examples() -> None:
    for module in (runner_module, report_module, hooks_module):
        assert doctest.testmod(module).failed == 0, module.__name__


class TestResults:
    @pytest.mark.parametrize("chunksize", [1, 3, 7, 100])
    def test_ordered_results_match_a_plain_map(self, chunksize: int) -> None:
        assert list(Runner(FakeBackend(), double, range(50), chunksize=chunksize)) == [
            2 * i for i in range(50)
        ]

    def test_generator_of_unknown_length(self) -> None:
        assert list(Runner(FakeBackend(2), double, (i for i in range(23)), chunksize=4)) == [
            2 * i for i in range(23)
        ]

    def test_empty_input(self) -> None:
        runner = Runner(FakeBackend(), double, [], chunksize=4)
        assert list(runner) == []
        assert runner.report.status == "completed"
        assert runner.report.n_items == 0
        assert runner.report.n_chunks == 0

    def test_ordered_even_when_chunks_finish_in_reverse(self) -> None:
        backend = FakeBackend(6, delay=lambda task: 0.05 * (6 - task.start))
        assert list(Runner(backend, double, range(6), chunksize=1, adaptive=False)) == [0, 2, 4, 6, 8, 10]

    def test_unordered_yields_in_completion_order(self) -> None:
        backend = FakeBackend(6, delay=lambda task: 0.05 * (6 - task.start))
        results = list(Runner(backend, double, range(6), chunksize=1, adaptive=False, ordered=False))
        assert results == [10, 8, 6, 4, 2, 0]

    def test_unordered_yields_each_item_once(self) -> None:
        results = list(Runner(FakeBackend(3), double, range(1000), chunksize=7, ordered=False))
        assert sorted(results) == [2 * i for i in range(1000)]

    def test_plain_callable_is_wrapped_by_backend_kind(self) -> None:
        backend = FakeBackend()
        list(Runner(backend, double, range(3), chunksize=1))
        assert backend.tasks[0].func.payload == b""  # FunctionRef.local for in-process backends
        backend.kind = "processes"
        list(Runner(backend, double, range(3), chunksize=1))
        assert backend.tasks[-1].func.payload != b""  # FunctionRef.create: pickled once

    def test_function_ref_is_used_as_given(self) -> None:
        ref = FunctionRef.create(double)
        backend = FakeBackend()
        list(Runner(backend, ref, range(3), chunksize=2))
        assert all(t.func is ref for t in backend.tasks)

    def test_runs_on_the_real_serial_backend(self) -> None:
        with SerialBackend() as backend:
            assert list(Runner(backend, double, range(10), chunksize=3)) == [2 * i for i in range(10)]

    def test_runs_once(self) -> None:
        runner = Runner(FakeBackend(), double, range(3), chunksize=1)
        list(runner)
        with pytest.raises(RuntimeError, match="already run"):
            iter(runner)

    def test_report_before_the_end_is_an_error(self) -> None:
        runner = Runner(FakeBackend(), double, range(3), chunksize=1)
        with pytest.raises(RuntimeError, match="not ended yet"):
            runner.report  # noqa: B018


class TestProperties:
    @settings(max_examples=60, deadline=None)
    @given(
        n=st.integers(min_value=0, max_value=60),
        chunksize=st.integers(min_value=1, max_value=9),
        n_workers=st.integers(min_value=1, max_value=4),
        max_in_flight=st.one_of(st.none(), st.integers(min_value=1, max_value=5)),
        ordered=st.booleans(),
        adaptive=st.booleans(),
        as_generator=st.booleans(),
        pre_positions=st.sets(st.integers(min_value=0, max_value=70), max_size=10),
        failing=st.sets(st.integers(min_value=0, max_value=60), max_size=5),
        cost=st.floats(min_value=0.0, max_value=0.1),
    )
    def test_every_item_once_and_func_never_on_precomputed(
        self,
        n: int,
        chunksize: int,
        n_workers: int,
        max_in_flight: int | None,
        ordered: bool,
        adaptive: bool,
        as_generator: bool,
        pre_positions: set[int],
        failing: set[int],
        cost: float,
    ) -> None:
        calls: list[int] = []

        def f(x: int) -> int:
            calls.append(x)
            if x in failing:
                raise Boom(str(x))
            return 2 * x

        pre = {k: -k for k in pre_positions}
        items: Iterable[int] = (i for i in range(n)) if as_generator else range(n)
        runner = Runner(
            FakeBackend(n_workers, cost=lambda item: cost),
            f,
            items,
            chunksize=chunksize,
            max_in_flight=max_in_flight,
            ordered=ordered,
            adaptive=adaptive,
            on_error="collect",
            placeholder="failed",
            precomputed=pre,
        )
        expected: list[Any] = [
            pre[i] if i in pre else ("failed" if i in failing else 2 * i) for i in range(n)
        ]
        results = list(runner)
        if ordered:
            assert results == expected
        else:
            assert sorted(results, key=repr) == sorted(expected, key=repr)
        assert sorted(calls) == [i for i in range(n) if i not in pre]
        report = runner.report
        assert report.n_items == n
        assert report.n_failed == len([i for i in failing if i < n and i not in pre])
        assert report.items_from_dry_run == len([k for k in pre if k < n])


class TestValidation:
    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"chunksize": 0}, r"chunksize must be an integer >= 1 \(got 0\)"),
            ({"chunksize": 2.5}, r"chunksize must be an integer >= 1 \(got 2.5\)"),
            ({"target_chunk_duration": 0}, "target_chunk_duration must be > 0"),
            ({"on_error": "ignore"}, "on_error must be 'raise' or 'collect'"),
            ({"item_timeout": 0}, "item_timeout must be > 0"),
            ({"max_in_flight": 0}, r"max_in_flight must be >= 1 \(got 0\)"),
            ({"start": -1}, "start must be >= 0"),
            ({"n_items": -1}, "n_items must be >= 0"),
            ({"start": 5, "precomputed": {1: 1, 3: 3, 4: 4}}, "without gaps"),
        ],
    )
    def test_bad_arguments(self, kwargs: dict[str, Any], message: str) -> None:
        args: dict[str, Any] = {"chunksize": 1, **kwargs}
        with pytest.raises(ConfigurationError, match=message):
            Runner(FakeBackend(), double, range(3), **args)


class TestPrecomputed:
    def test_prefix_is_emitted_in_place_and_not_recomputed(self) -> None:
        calls: list[int] = []

        def f(x: int) -> int:
            calls.append(x)
            return 2 * x

        runner = Runner(FakeBackend(), f, range(10), chunksize=3, precomputed=[0, 2, 4])
        assert list(runner) == [2 * i for i in range(10)]
        assert sorted(calls) == list(range(3, 10))
        assert runner.report.items_from_dry_run == 3

    def test_scattered_positions_are_skipped(self) -> None:
        calls: list[int] = []

        def f(x: int) -> int:
            calls.append(x)
            return 2 * x

        pre = {0: "a", 4: "b", 5: "c", 9: "d"}
        runner = Runner(FakeBackend(2), f, range(10), chunksize=4, precomputed=pre)
        expected: list[Any] = [2 * i for i in range(10)]
        for k, v in pre.items():
            expected[k] = v
        assert list(runner) == expected
        assert sorted(calls) == [1, 2, 3, 6, 7, 8]

    def test_unordered_emits_precomputed_once(self) -> None:
        pre = {0: 0, 1: 2, 7: 14}
        results = list(Runner(FakeBackend(2), double, range(20), chunksize=3, ordered=False, precomputed=pre))
        assert sorted(results) == [2 * i for i in range(20)]

    def test_rest_of_a_consumed_generator_with_start(self) -> None:
        source = (i for i in range(10))
        sampled = [next(source) for _ in range(3)]  # what a dry run would have pulled and run
        runner = Runner(
            FakeBackend(),
            fail_on_3,
            source,
            chunksize=2,
            start=3,
            precomputed=[fail_on_3(i) for i in sampled],
        )
        with pytest.raises(ItemError) as info:
            list(runner)
        assert info.value.index == 3  # positions count from the start of the whole input
        runner = Runner(
            FakeBackend(),
            double,
            (i for i in range(3, 10)),
            chunksize=2,
            n_items=7,
            start=3,
            precomputed=[0, 2, 4],
        )
        assert list(runner) == [2 * i for i in range(10)]
        assert runner.total_items == 10
        assert runner.report.total_items == 10
        assert runner.report.items_from_dry_run == 3

    def test_precomputed_beyond_the_input_is_ignored(self) -> None:
        assert list(Runner(FakeBackend(), double, range(3), chunksize=2, precomputed={5: 99})) == [0, 2, 4]


class TestBoundedInFlight:
    def test_input_is_pulled_only_a_window_ahead(self) -> None:
        source = PullCounter(10_000)
        runner = Runner(FakeBackend(2), double, source, chunksize=10, max_in_flight=3, adaptive=False)
        results = iter(runner)
        assert next(results) == 0
        # the window (with the finished chunks waiting for the first), and the chunk refilled behind it
        assert source.pulled <= (READY_SLACK * 3 + 1) * 10

    def test_ordered_buffering_is_bounded_while_the_first_chunk_is_slow(self) -> None:
        source = PullCounter(1000)
        backend = FakeBackend(2, delay=lambda task: 0.3 if task.start == 0 else 0.0)
        runner = Runner(backend, double, source, chunksize=5, adaptive=False)  # window: 2 × 2 chunks
        results = iter(runner)
        assert next(results) == 0
        assert source.pulled <= (READY_SLACK * 4 + 1) * 5
        assert list(results) == [2 * i for i in range(1, 1000)]

    def test_results_waiting_for_a_slow_chunk_do_not_stop_submission(self) -> None:
        # chunk 0 takes 0.3 s, the others 10 ms: the other worker must keep getting chunks meanwhile
        backend = FakeBackend(2, delay=lambda task: 0.3 if task.start == 0 else 0.01)
        runner = Runner(backend, double, range(100), chunksize=5, adaptive=False)  # window: 2 × 2 chunks
        results = iter(runner)
        assert next(results) == 0
        # in flight ≤ 4 at any time, but finished chunks waiting behind chunk 0 no longer count:
        # more than the 4 of the old window were submitted before chunk 0 came back
        assert len(backend.tasks) > 4 + 1
        assert len(backend.tasks) <= READY_SLACK * 4 + 1
        assert list(results) == [2 * i for i in range(1, 100)]

    def test_long_stream_is_pulled_a_bounded_distance_ahead(self) -> None:
        n = 200_000
        source = PullCounter(None)
        backend = FakeBackend(2, cost=lambda item: 1e-5)  # ideal chunk: 1000 items for 0.01 s
        runner = Runner(backend, double, itertools.islice(source, n), chunksize=8, target_chunk_duration=0.01)
        lead = 0
        for done, result in enumerate(runner, start=1):
            lead = max(lead, source.pulled - done)
            assert result == 2 * (done - 1)
        assert done == n
        assert max(backend.sizes) <= 2000
        assert lead <= (READY_SLACK * 2 * 2 + 1) * max(backend.sizes)
        assert lead < n // 20  # constant memory: never more than a few chunks of a 200k stream


class TestFailures:
    def test_raise_names_the_index_and_chains_the_original(self) -> None:
        runner = Runner(FakeBackend(), fail_on_3, range(10), chunksize=2)
        with pytest.raises(ItemError, match="item 3 raised Boom: bad item 3") as info:
            list(runner)
        assert info.value.index == 3
        assert isinstance(info.value.__cause__, Boom)
        assert "bad item 3" in (info.value.remote_traceback or "")
        report = runner.report
        assert report.status == "failed"
        assert report.error is info.value
        assert [f.index for f in report.failures] == [3]

    def test_raise_aborts_work_in_flight(self) -> None:
        backend = FakeBackend(2, delay=lambda task: 0.0 if task.start == 2 else 5.0)
        with pytest.raises(ItemError):
            list(Runner(backend, fail_on_3, range(20), chunksize=2, adaptive=False))
        assert backend.aborts == 1

    def test_raised_as_soon_as_seen_even_before_earlier_results(self) -> None:
        seen: list[int] = []
        with pytest.raises(ItemError):
            for result in Runner(FakeBackend(), fail_on_3, range(10), chunksize=2, adaptive=False):
                seen.append(result)
        assert seen == []  # chunk [0, 1] was done, but the failure in [2, 3] is raised first

    @pytest.mark.parametrize("item", [TimesOut(), Dies()])
    def test_timeouts_and_deaths_are_raised_as_they_are(self, item: object) -> None:
        items: list[Any] = [1, 2, item, 4]
        with pytest.raises((ItemTimeoutError, WorkerDiedError)) as info:
            list(Runner(FakeBackend(), lambda x: x, items, chunksize=4))
        assert not isinstance(info.value, ItemError)

    def test_collect_puts_placeholders_and_carries_on(self) -> None:
        recorder = Recorder()
        runner = Runner(
            FakeBackend(),
            fail_on_3,
            [0, 1, 2, 3, 4, 3, 6],
            chunksize=3,
            on_error="collect",
            placeholder="FAILED",
            hooks=[recorder],
        )
        assert list(runner) == [0, 1, 2, "FAILED", 4, "FAILED", 6]
        report = runner.report
        assert report.status == "completed"
        assert not report.ok
        assert report.n_failed == 2
        assert [f.index for f in report.failures] == [3, 5]
        assert all(isinstance(f.error, Boom) for f in report.failures)
        assert [f.index for name, f in recorder.calls if name == "error"] == [3, 5]

    def test_collect_resubmits_never_started_items_once(self) -> None:
        calls: list[Any] = []

        def f(x: Any) -> Any:
            calls.append(x)
            return x

        stuck = TimesOut()
        items: list[Any] = [0, 1, stuck, 3, 4, 5, 6]
        backend = FakeBackend()
        runner = Runner(backend, f, items, chunksize=5, on_error="collect", adaptive=False)
        assert list(runner) == [0, 1, None, 3, 4, 5, 6]
        assert calls == [0, 1, 3, 4, 5, 6]  # nothing ran twice
        assert [(t.start, len(t.items)) for t in backend.tasks] == [(0, 5), (3, 2), (5, 2)]
        assert [f.index for f in runner.report.failures] == [2]
        assert isinstance(runner.report.failures[0].error, ItemTimeoutError)

    def test_collect_unordered(self) -> None:
        items = list(range(30))
        runner = Runner(FakeBackend(2), fail_on_3, items, chunksize=4, on_error="collect", ordered=False)
        results = list(runner)
        assert sorted(r for r in results if r is not None) == [i for i in items if i != 3]
        assert results.count(None) == 1

    def test_collect_keeps_a_bounded_number_of_failures(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(runner_module, "MAX_FAILURES_KEPT", 5)
        runner = Runner(FakeBackend(), lambda x: 1 / 0, range(20), chunksize=4, on_error="collect")
        assert list(runner) == [None] * 20
        assert runner.report.n_failed == 20
        assert len(runner.report.failures) == 5

    def test_backend_breaking_the_contract_is_an_error_not_a_hang(self) -> None:
        with pytest.raises(ExecutionError, match="breaks the backend contract"):
            list(Runner(FakeBackend(n_done_override=0), double, range(5), chunksize=2, on_error="collect"))

    def test_a_closed_backend_is_an_execution_error(self) -> None:
        backend = SerialBackend()
        backend.close()
        with pytest.raises(ExecutionError, match="cancelled: the backend was closed or aborted"):
            list(Runner(backend, double, range(5), chunksize=2))


class TestInterrupt:
    def test_keyboard_interrupt_aborts_and_propagates(self) -> None:
        def f(x: int) -> int:
            if x == 5:
                raise KeyboardInterrupt
            return x

        backend = SerialBackend()
        recorder = Recorder()
        runner = Runner(backend, f, range(10), chunksize=2, hooks=[recorder])
        with pytest.raises(KeyboardInterrupt):
            list(runner)
        assert runner.report.status == "interrupted"
        assert recorder.names[-1] == "end"

    def test_interrupt_while_waiting_aborts(self) -> None:
        backend = FakeBackend(2, delay=lambda task: 5.0)
        runner = Runner(backend, double, range(10), chunksize=1)

        def interrupt_collect(*, block: bool) -> None:
            raise KeyboardInterrupt

        results = iter(runner)
        runner._collect = interrupt_collect  # type: ignore[method-assign]
        with pytest.raises(KeyboardInterrupt):
            next(results)
        assert backend.aborts == 1
        assert runner.report.status == "interrupted"


class TestHooks:
    def test_calls_and_their_order(self) -> None:
        recorder = Recorder()
        runner = Runner(
            FakeBackend(),
            fail_on_3,
            range(8),
            chunksize=2,
            on_error="collect",
            hooks=[recorder],
            adaptive=False,
        )
        list(runner)
        assert recorder.names == ["start", "chunk", "chunk", "error", "chunk", "chunk", "end"]
        info = recorder.calls[0][1]
        assert isinstance(info, RunInfo)
        assert (info.total_items, info.initial_chunksize, info.on_error) == (8, 2, "collect")
        chunks = [c for name, c in recorder.calls if name == "chunk"]
        assert [(c.start, c.size, c.worker) for c in chunks] == [(s, 2, "fake:0") for s in (0, 2, 4, 6)]
        assert chunks[1].n_failed == 1
        assert recorder.calls[-1][1] is runner.report

    def test_a_raising_hook_stops_the_run_and_end_hooks_still_run(self) -> None:
        class Broken(RunHooks):
            def on_chunk_done(self, chunk: ChunkRecord) -> None:
                if chunk.start >= 4:
                    raise LookupError("metrics server down")

        backend = FakeBackend(2, delay=lambda task: 0.0 if task.start < 6 else 5.0)
        recorder = Recorder()
        runner = Runner(backend, double, range(100), chunksize=2, adaptive=False, hooks=[Broken(), recorder])
        with pytest.raises(LookupError, match="metrics server down"):
            list(runner)
        assert backend.aborts == 1
        assert recorder.names[-1] == "end"
        assert runner.report.status == "failed"
        assert isinstance(runner.report.error, LookupError)

    def test_a_raising_start_hook_runs_nothing(self) -> None:
        class Broken(RunHooks):
            def on_run_start(self, info: RunInfo) -> None:
                raise RuntimeError("no")

        backend = FakeBackend()
        with pytest.raises(RuntimeError, match="no"):
            list(Runner(backend, double, range(10), chunksize=2, hooks=[Broken()]))
        assert backend.tasks == []

    def test_a_raising_end_hook_is_raised_after_every_end_hook_ran(self) -> None:
        class Broken(RunHooks):
            def on_run_end(self, report: RunReport) -> None:
                raise RuntimeError("end hook")

        recorder = Recorder()
        runner = Runner(FakeBackend(), double, range(4), chunksize=2, hooks=[Broken(), recorder])
        with pytest.raises(RuntimeError, match="end hook"):
            list(runner)
        assert recorder.names[-1] == "end"
        assert runner.report.status == "completed"

    def test_a_raising_end_hook_does_not_hide_the_runs_error(self) -> None:
        class Broken(RunHooks):
            def on_run_end(self, report: RunReport) -> None:
                raise RuntimeError("end hook")

        with pytest.warns(RuntimeWarning, match="end hook"), pytest.raises(ItemError):
            list(Runner(FakeBackend(), fail_on_3, range(8), chunksize=2, hooks=[Broken()]))

    def test_consumer_stopping_early_cancels_the_run(self) -> None:
        backend = FakeBackend(2, delay=lambda task: 0.0 if task.start < 4 else 5.0)
        recorder = Recorder()
        runner = Runner(backend, double, range(100), chunksize=2, adaptive=False, hooks=[recorder])
        results = iter(runner)
        assert [next(results) for _ in range(3)] == [0, 2, 4]
        results.close()  # type: ignore[attr-defined]
        assert runner.report.status == "cancelled"
        assert runner.report.n_items == 3
        assert backend.aborts == 1
        assert recorder.names[-1] == "end"


class TestProgressBar:
    def test_draws_counts_when_forced(self) -> None:
        out = io.StringIO()
        bar = ProgressBar(enabled=True, console=Console(file=out, force_terminal=True, width=100))
        assert list(Runner(FakeBackend(), double, range(40), chunksize=5, hooks=[bar], precomputed=[0])) == [
            2 * i for i in range(40)
        ]
        assert "40/40" in out.getvalue()
        assert "serial × 1" in out.getvalue()

    def test_unknown_total(self) -> None:
        out = io.StringIO()
        bar = ProgressBar(enabled=True, console=Console(file=out, force_terminal=True, width=100))
        list(Runner(FakeBackend(), double, (i for i in range(7)), chunksize=5, hooks=[bar]))
        assert "7/?" in out.getvalue()

    @pytest.mark.parametrize(
        ("speed", "shown"),
        [(None, "? it/s"), (3.25, "3.2 it/s"), (1234.0, "1.2k it/s"), (2.5e6, "2.5M it/s")],
    )
    def test_rate_format(self, speed: float | None, shown: str) -> None:
        assert hooks_module._format_rate(speed) == shown

    def test_off_when_not_a_terminal(self) -> None:
        out = io.StringIO()
        bar = ProgressBar(console=Console(file=out))
        assert not bar.enabled
        list(Runner(FakeBackend(), double, range(10), chunksize=5, hooks=[bar]))
        assert out.getvalue() == ""


class TestAdaptation:
    def test_tiny_items_grow_the_chunks(self) -> None:
        backend = FakeBackend(cost=lambda item: 1e-4)  # ideal: 100 items for 0.01 s
        runner = Runner(backend, double, (i for i in range(5000)), chunksize=1, target_chunk_duration=0.01)
        list(runner)
        assert backend.sizes[:8] == [1, 2, 4, 8, 16, 32, 64, 100]  # ×2 per step, then on target
        assert set(backend.sizes[7:-1]) == {100}
        assert runner.report.initial_chunksize == 1
        assert runner.report.final_chunksize == 100

    def test_slow_items_shrink_the_chunks(self) -> None:
        backend = FakeBackend(cost=lambda item: 0.1)  # ideal: 2 items for 0.2 s
        runner = Runner(backend, double, (i for i in range(300)), chunksize=64)
        list(runner)
        assert backend.sizes[:7] == [64, 32, 16, 8, 4, 2, 2]
        assert runner.report.final_chunksize == 2

    def test_tail_is_split_across_workers(self) -> None:
        backend = FakeBackend(2, cost=lambda item: 0.01)  # steady size 20 for 0.2 s
        list(Runner(backend, double, range(400), chunksize=20))
        sizes = backend.sizes
        assert sum(sizes) == 400
        assert sizes[0] == 20
        tail = sizes[sizes.index(20, 1) :]
        assert tail[-1] == 1
        assert all(a >= b for a, b in itertools.pairwise(tail))  # shrinking to the end

    def test_the_dry_runs_item_time_holds_the_tail_floor_from_the_first_chunk(self) -> None:
        # 8 workers, chunks of 100 items of 10 µs: before any chunk finished, the tail rule alone
        # cut the first ones to 1000 // 16 = 62; known to last 1 ms, 100 items are not worth a split
        unseeded = FakeBackend(8, cost=lambda item: 1e-5)
        list(Runner(unseeded, double, range(1000), chunksize=100))
        assert unseeded.sizes[0] == 1000 // (TAIL_SPLIT * 8)
        seeded = FakeBackend(8, cost=lambda item: 1e-5)
        list(Runner(seeded, double, range(1000), chunksize=100, item_seconds=1e-5))
        assert seeded.sizes[0] == 100

    def test_many_workers_get_no_tail_chunk_too_short_for_the_parent(self) -> None:
        # 74 workers of 1 ms items: at least 74 × 200 µs = 15 items a chunk, but for what is left
        backend = FakeBackend(74, cost=lambda item: 0.001)
        list(Runner(backend, double, range(2000), chunksize=27, item_seconds=0.001))
        shortest = math.ceil(74 * TAIL_SECONDS_PER_WORKER / 0.001)
        assert sum(backend.sizes) == 2000
        assert all(size >= shortest for size in backend.sizes[:-1])
        assert len(backend.sizes) < 2000 / shortest + 1

    @pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
    def test_an_unusable_item_time_is_ignored(self, bad: float) -> None:
        backend = FakeBackend(8, cost=lambda item: 0.001)
        list(Runner(backend, double, range(1000), chunksize=100, item_seconds=bad))
        assert backend.sizes[0] == 1000 // (TAIL_SPLIT * 8)

    def test_forced_chunksize_is_kept(self) -> None:
        backend = FakeBackend(2, cost=lambda item: 1.0)
        list(Runner(backend, double, range(50), chunksize=8, adaptive=False))
        assert backend.sizes == [8] * 6 + [2]


class TestReport:
    def test_figures_with_a_fake_clock(self) -> None:
        ticks = iter([10.0, 14.0])
        backend = FakeBackend(2, cost=lambda item: 0.5)
        runner = Runner(
            backend,
            double,
            range(12),
            chunksize=3,
            adaptive=False,
            predicted_seconds=5.0,
            clock=lambda: next(ticks),
        )
        list(runner)
        report = runner.report
        assert report.wall_seconds == 4.0
        assert report.busy_seconds == pytest.approx(6.0)
        assert report.utilisation == pytest.approx(6.0 / (4.0 * 2))
        assert report.measured_vs_predicted == pytest.approx(0.8)
        assert report.items_per_second == 3.0
        assert report.n_chunks == 4
        assert report.chunk_durations == (1.5, 1.5, 1.5, 1.5)
        assert report.ok
        text = repr(report)
        assert text.startswith("RunReport(status='completed', executor='serial', n_workers=2, items=12/12")
        assert "utilisation=75%" in text
        assert "measured/predicted=0.80" in text
        summary = report.summary()
        assert (
            summary.splitlines()[0] == "amorsize run completed: 12/12 items on serial × 2 in 4 s (3 items/s)"
        )
        assert "worker utilisation 75%" in summary
        assert "measured/predicted 0.80" in summary

    def test_summary_names_failures_and_the_error(self) -> None:
        runner = Runner(FakeBackend(), fail_on_3, range(8), chunksize=2, precomputed=[0])
        with pytest.raises(ItemError):
            list(runner)
        summary = runner.report.summary()
        assert "1 items failed (first: item 3: Boom: bad item 3)" in summary
        assert "stopped by ItemError: item 3 raised Boom" in summary
        assert "1 results reused from the dry run" in summary

    def test_chunk_records_are_bounded(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(runner_module, "MAX_CHUNK_RECORDS", 3)
        runner = Runner(FakeBackend(), double, range(10), chunksize=1, adaptive=False)
        list(runner)
        assert runner.report.n_chunks == 10
        assert len(runner.report.chunks) == 3
        assert MAX_CHUNK_RECORDS > 3

    def test_empty_run_figures(self) -> None:
        runner = Runner(FakeBackend(), double, [], chunksize=1, clock=lambda: 0.0)
        list(runner)
        assert runner.report.utilisation == 0.0
        assert runner.report.items_per_second == 0.0
        assert runner.report.measured_vs_predicted is None


class TestDirectSerialPass:
    """``batches()`` on an inline (serial) backend maps a known-length input in one pass."""

    def test_one_pass_same_results_and_a_report(self) -> None:
        from amorsize.run.backends.serial import SerialBackend

        data = list(range(10_000))
        runner = Runner(
            SerialBackend(), double, iter(data[5:]), chunksize=7, n_items=9_995, start=5, precomputed=data[:5]
        )
        out = [x for batch in runner.batches() for x in batch]
        assert out == [0, 1, 2, 3, 4] + [2 * x for x in data[5:]]
        report = runner.report
        assert report.status == "completed" and report.n_items == 10_000
        assert report.n_chunks == 1 and report.chunks[0].size == 9_995 and report.chunks[0].start == 5
        assert report.items_from_dry_run == 5

    def test_an_error_names_its_item_and_nothing_after_it_runs(self) -> None:
        from amorsize.run.backends.serial import SerialBackend

        calls: list[int] = []

        def fails_at_7(x: int) -> int:
            calls.append(x)
            if x == 7:
                raise ValueError("seven")
            return x

        runner = Runner(SerialBackend(), fails_at_7, range(20), chunksize=3, n_items=20)
        with pytest.raises(ItemError) as info:
            list(runner.batches())
        assert info.value.index == 7 and isinstance(info.value.__cause__, ValueError)
        assert calls == list(range(8))
        assert runner.report.status == "failed" and runner.report.n_failed == 1

    @pytest.mark.parametrize("kind", [list, tuple, collections.deque])
    def test_after_the_dry_run_an_error_names_its_position_in_the_input(self, kind: type) -> None:
        # list and tuple iterators run in a list comprehension (how far the iterator got names the
        # item); a deque's with list.extend (the results made so far count it)
        from amorsize.run.backends.serial import SerialBackend

        def fails_at_13(x: int) -> int:
            if x == 13:
                raise ValueError("thirteen")
            return x

        rest = iter(kind(range(5, 40)))
        runner = Runner(
            SerialBackend(), fails_at_13, rest, chunksize=3, n_items=35, start=5, precomputed=list(range(5))
        )
        with pytest.raises(ItemError) as info:
            list(runner.batches())
        assert info.value.index == 13
        assert next(rest) == 14  # nothing after it ran
        assert runner.report.chunks[0].size == 9  # 5..13

    def test_a_tuple_runs_in_one_pass_with_the_dry_runs_results_first(self) -> None:
        from amorsize.run.backends.serial import SerialBackend

        data = tuple(range(1_000))
        runner = Runner(
            SerialBackend(), double, iter(data[3:]), chunksize=7, n_items=997, start=3, precomputed=[0, 2, 4]
        )
        (batch,) = list(runner.batches())
        assert batch == [2 * x for x in data]

    def test_chunks_when_something_needs_them(self) -> None:
        from amorsize.run.backends.serial import SerialBackend

        # no declared length (a stream: stay lazy), hooks, or plain iteration (imap): chunks as before
        for runner in (
            Runner(SerialBackend(), double, iter(range(100)), chunksize=10, adaptive=False),
            Runner(
                SerialBackend(),
                double,
                range(100),
                chunksize=10,
                n_items=100,
                adaptive=False,
                hooks=[hooks_module.RunHooks()],
            ),
        ):
            assert [x for b in runner.batches() for x in b] == [2 * x for x in range(100)]
            assert runner.report.n_chunks == 10
        iterated = Runner(SerialBackend(), double, range(100), chunksize=10, n_items=100, adaptive=False)
        assert list(iterated) == [2 * x for x in range(100)]
        assert iterated.report.n_chunks == 10

    def test_a_closed_backend_is_not_bypassed(self) -> None:
        from amorsize.run.backends.serial import SerialBackend

        backend = SerialBackend()
        backend.close()
        with pytest.raises(ExecutionError, match="cancelled"):
            list(Runner(backend, double, range(10), chunksize=5, n_items=10).batches())
