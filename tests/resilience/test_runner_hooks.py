"""The runner's resilience hooks: dispatch gate, outcome sink, checked and failed precomputed results."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from amorsize.errors import CircuitOpenError, ItemError
from amorsize.run.backend import ItemFailure
from amorsize.run.backends.serial import SerialBackend
from amorsize.run.backends.threads import ThreadBackend
from amorsize.run.runner import Admission, Failed, Runner

pytestmark = pytest.mark.timeout(20)


class Sink:
    def __init__(self) -> None:
        self.calls: list[tuple[int, list[Any], list[Any], list[int]]] = []

    def __call__(
        self, start: int, items: Sequence[Any], results: Sequence[Any], failures: Sequence[ItemFailure]
    ) -> None:
        self.calls.append((start, list(items), list(results), [f.index for f in failures]))


class ScriptedGate:
    """Answers admissions from a script; records what the runner reported back."""

    def __init__(self, answers: list[Admission]) -> None:
        self.answers = answers
        self.asked: list[tuple[int, int]] = []
        self.sent: list[tuple[int, int, int]] = []
        self.outcomes: list[tuple[int, str | None]] = []

    def admit(self, wanted: int, in_flight: int) -> Admission:
        self.asked.append((wanted, in_flight))
        return self.answers.pop(0) if self.answers else Admission(wanted)

    def dispatched(self, admitted: int, start: int, sent: int) -> None:
        self.sent.append((admitted, start, sent))

    def record(self, position: int, error: BaseException | None) -> None:
        self.outcomes.append((position, None if error is None else type(error).__name__))


def inverse(x: int) -> float:
    return 1 / x


class TestOutcomeSink:
    def test_sees_fresh_results_and_failures_with_their_items(self) -> None:
        sink = Sink()
        runner = Runner(
            SerialBackend(),
            inverse,
            [1, 0, 2, 4],
            chunksize=2,
            on_error="collect",
            placeholder="P",
            on_outcome=sink,
            adaptive=False,
        )
        assert list(runner) == [1.0, "P", 0.5, 0.25]
        assert sink.calls == [(0, [1, 0], [1.0, "P"], [1]), (2, [2, 4], [0.5, 0.25], [])]

    def test_precomputed_failures_are_failures(self) -> None:
        sink = Sink()
        failed = Failed(ValueError("dry run"), "trace", item="it")
        runner = Runner(
            SerialBackend(),
            abs,
            [-3],
            chunksize=1,
            start=2,
            precomputed=[5, failed],
            on_error="collect",
            on_outcome=sink,
        )
        assert list(runner) == [5, None, 3]
        assert sink.calls[0] == (1, ["it"], [None], [1])
        assert runner.report.n_failed == 1 and runner.report.failures[0].traceback == "trace"
        with pytest.raises(ItemError, match="item 1 raised ValueError: dry run"):
            list(Runner(SerialBackend(), abs, [-3], chunksize=1, start=2, precomputed=[5, failed]))

    def test_an_error_in_the_sink_stops_the_run(self) -> None:
        def refuse(*_: Any) -> None:
            raise OSError("disk full")

        runner = Runner(SerialBackend(), abs, range(10), chunksize=2, on_outcome=refuse)
        with pytest.raises(OSError, match="disk full"):
            list(runner)
        assert runner.report.status == "failed"


class TestCheckPrecomputed:
    def test_called_for_each_skipped_item_and_may_refuse(self) -> None:
        checked: list[tuple[int, Any]] = []
        runner = Runner(
            SerialBackend(),
            abs,
            [-1, -2, -3, -4],
            chunksize=1,
            precomputed={1: "b", 2: "c"},
            check_precomputed=lambda position, item: checked.append((position, item)),
        )
        assert list(runner) == [1, "b", "c", 4]
        assert checked == [(1, -2), (2, -3)]

        def refuse(position: int, item: Any) -> None:
            raise LookupError(f"item {position} changed")

        with pytest.raises(LookupError, match="item 1 changed"):
            list(
                Runner(
                    SerialBackend(),
                    abs,
                    [-1, -2],
                    chunksize=1,
                    precomputed={1: "b"},
                    check_precomputed=refuse,
                )
            )


class TestGate:
    def test_chunks_are_shrunk_and_outcomes_recorded(self) -> None:
        gate = ScriptedGate([Admission(1), Admission(2)])
        runner = Runner(
            SerialBackend(), inverse, [1, 2, 0, 4], chunksize=4, gate=gate, on_error="collect", adaptive=False
        )
        assert list(runner) == [1.0, 0.5, None, 0.25]
        assert gate.asked[0] == (4, 0)
        assert [c.size for c in runner.report.chunks] == [1, 2, 1]
        assert gate.outcomes == [(0, None), (1, None), (2, "ZeroDivisionError"), (3, None)]
        assert gate.sent == [(1, 0, 1), (2, 1, 2), (4, 3, 1)]

    def test_fail_fast_runs_nothing(self) -> None:
        error = CircuitOpenError("open")
        gate = ScriptedGate([Admission(1), Admission(3, fail_fast=error)])
        called: list[int] = []

        def record(x: int) -> int:
            called.append(x)
            return x

        sink = Sink()
        runner = Runner(
            SerialBackend(),
            record,
            range(6),
            chunksize=1,
            gate=gate,
            on_error="collect",
            placeholder="-",
            on_outcome=sink,
        )
        assert list(runner) == [0, "-", "-", "-", 4, 5]
        assert called == [0, 4, 5]
        assert runner.report.n_failed_fast == 3 and runner.report.n_failed == 3
        assert sink.calls[1] == (1, [1, 2, 3], ["-", "-", "-"], [1, 2, 3])
        with pytest.raises(CircuitOpenError, match="open"):
            list(
                Runner(
                    SerialBackend(),
                    record,
                    range(3),
                    chunksize=1,
                    gate=ScriptedGate([Admission(1, fail_fast=error)]),
                )
            )

    def test_waits_for_time_then_dispatches(self) -> None:
        now = [0.0]
        slept: list[float] = []

        def sleep(seconds: float) -> None:
            slept.append(seconds)
            now[0] += seconds

        # Asked again after each yield: only a wait with nothing in flight and nothing to yield sleeps.
        gate = ScriptedGate([Admission(0, wait=0.5), Admission(2), *[Admission(0, wait=0.25)] * 3])
        runner = Runner(
            SerialBackend(),
            abs,
            [-1, -2, -3],
            chunksize=2,
            gate=gate,
            clock=lambda: now[0],
            sleep=sleep,
            adaptive=False,
        )
        assert list(runner) == [1, 2, 3]
        assert slept == [0.5, 0.25]

    def test_waits_for_a_chunk_on_threads(self) -> None:
        class OneAtATime(ScriptedGate):
            def admit(self, wanted: int, in_flight: int) -> Admission:
                self.asked.append((wanted, in_flight))
                return Admission(0) if in_flight else Admission(1)

        gate = OneAtATime([])
        with ThreadBackend(3) as backend:
            runner = Runner(backend, abs, range(-20, 0), chunksize=5, gate=gate)
            assert list(runner) == list(range(20, 0, -1))
        assert max(in_flight for _, in_flight in gate.asked) <= 1
        assert {c.size for c in runner.report.chunks} == {1}
