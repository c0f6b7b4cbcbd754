"""validate_optimization and quick_validate: measured against predicted, on small real workloads."""

from __future__ import annotations

import doctest
import math
import time
from collections.abc import Iterator
from typing import Any

import pytest

from amorsize import validation
from amorsize.errors import ConfigurationError
from amorsize.validation import AlternativeTiming, ValidationResult, quick_validate, validate_optimization


def square(x: int) -> int:
    return x * x


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def spin(n: int) -> int:
    total = 0
    for i in range(n):
        total += i % 7
    return total


class TestValidateOptimization:
    @pytest.mark.timeout(60)
    def test_fields_are_consistent(self) -> None:
        result = validate_optimization(square, range(20_000))
        assert isinstance(result, ValidationResult)
        assert result.n_items == 20_000
        assert result.serial_time > 0 and result.parallel_time > 0
        assert math.isclose(result.actual_speedup, result.serial_time / result.parallel_time)
        assert 0 < result.accuracy_percent <= 100
        expected_error = (result.predicted_speedup - result.actual_speedup) / result.actual_speedup * 100
        assert math.isclose(result.error, expected_error)
        low, high = sorted((result.predicted_speedup, result.actual_speedup))
        assert math.isclose(result.accuracy_percent, 100 * low / high)
        assert result.plan.executor == "serial"  # 20k multiplications: nothing to gain
        assert result.alternatives == ()
        assert math.isclose(result.parallel_time, result.analysis_seconds + result.run_seconds, rel_tol=1e-9)
        assert result.report is not None and result.report.n_items == 20_000

    @pytest.mark.timeout(60)
    def test_a_generator_is_materialised_and_every_item_runs(self) -> None:
        calls: list[int] = []

        def record(x: int) -> int:
            calls.append(x)
            return x

        def items() -> Iterator[int]:
            yield from range(300)

        result = validate_optimization(record, items(), executor="threads")
        assert result.n_items == 300
        assert sorted(calls) == sorted(list(range(300)) * 2)  # the planned run, then the serial one

    @pytest.mark.timeout(60)
    def test_compare_measures_neighbours_of_the_plan(self) -> None:
        result = validate_optimization(nap, [0.002] * 60, compare=True, executor="threads")
        assert result.plan.executor == "threads"
        assert result.alternatives
        assert all(isinstance(alt, AlternativeTiming) and alt.seconds > 0 for alt in result.alternatives)
        seconds = [alt.seconds for alt in result.alternatives]
        assert seconds == sorted(seconds)
        plan = (result.plan.executor, result.plan.n_jobs, result.plan.chunksize)
        assert all((a.executor, a.n_jobs, a.chunksize) != plan for a in result.alternatives)
        assert {alt.executor for alt in result.alternatives} >= {"threads", "processes"}
        text = str(result)
        assert "Alternatives" in text and "(recommended)" in text

    @pytest.mark.timeout(60)
    def test_compare_on_a_serial_plan_tries_both_parallel_kinds(self) -> None:
        result = validate_optimization(square, range(2_000), compare=True)
        assert result.plan.executor == "serial"
        assert {alt.executor for alt in result.alternatives} == {"threads", "processes"}

    def test_empty_data_is_refused(self) -> None:
        with pytest.raises(ConfigurationError, match="empty"):
            validate_optimization(square, [])

    @pytest.mark.parametrize(
        "forced", [{"executor": "threads", "n_jobs": 2, "chunksize": 1}, {"executor": "serial"}]
    )
    def test_a_forced_plan_is_refused(self, forced: dict[str, Any]) -> None:
        with pytest.raises(ConfigurationError, match="nothing is planned or predicted"):
            validate_optimization(square, [1, 2], **forced)

    def test_bad_options_are_refused(self) -> None:
        with pytest.raises(ConfigurationError):
            validate_optimization(square, [1, 2], n_jobs=0)

    @pytest.mark.timeout(60)
    def test_report_reads_like_the_seed(self) -> None:
        result = validate_optimization(spin, [2_000] * 200, verbose=False)
        text = str(result)
        for line in (
            "=== Benchmark Validation Results ===",
            "Serial execution time:",
            "Parallel execution time:",
            "Actual speedup:",
            "Predicted speedup:",
            "Accuracy:",
            "Error:",
        ):
            assert line in text
        assert repr(result).startswith("ValidationResult(plan=")
        assert result.is_accurate(0.0)
        assert not result.is_accurate(100.1)

    @pytest.mark.timeout(60)
    def test_verbose_prints_to_stderr(self, capsys: pytest.CaptureFixture[str]) -> None:
        validate_optimization(square, range(100), verbose=True)
        captured = capsys.readouterr()
        assert "amorsize validate" in captured.err and "Benchmark Validation Results" in captured.err
        assert captured.out == ""


class TestQuickValidate:
    @pytest.mark.timeout(60)
    def test_spreads_the_subset_over_a_sequence(self) -> None:
        seen: list[int] = []

        def record(x: int) -> int:
            seen.append(x)
            return x

        result = quick_validate(record, list(range(1_000)), sample_size=10, executor="threads")
        assert result.n_items == 10
        assert sorted(set(seen)) == list(range(0, 1_000, 100))

    @pytest.mark.timeout(60)
    def test_consumes_only_the_head_of_an_iterator(self) -> None:
        source = iter(range(1_000))
        result = quick_validate(square, source, sample_size=25)
        assert result.n_items == 25
        assert next(source) == 25

    @pytest.mark.timeout(60)
    def test_small_inputs_are_taken_whole(self) -> None:
        assert quick_validate(square, [1, 2, 3], sample_size=100).n_items == 3

    @pytest.mark.parametrize("bad", [0, -1, 1.5, True])
    def test_bad_sample_size(self, bad: object) -> None:
        with pytest.raises(ConfigurationError, match="sample_size"):
            quick_validate(square, [1, 2], sample_size=bad)  # type: ignore[arg-type]


class TestAlternativeCandidates:
    @pytest.mark.timeout(60)
    def test_neighbours_stay_in_range(self) -> None:
        from amorsize.api import optimize

        plan = optimize(square, range(10), executor="processes", n_jobs=2, chunksize=2)
        found = validation._alternative_candidates(plan, 10, usable_cores=2)
        assert found
        for candidate in found:
            assert candidate.n_jobs >= 1
            assert 1 <= candidate.chunksize <= -(-10 // candidate.n_jobs)
        assert len(set(found)) == len(found)

    @pytest.mark.timeout(60)
    @pytest.mark.parametrize(("n_jobs", "halved"), [(2, None), (3, None), (4, 2), (8, 4)])
    def test_workers_are_halved_only_to_two_or_more(self, n_jobs: int, halved: int | None) -> None:
        # one worker is serial plus the pool's costs: timed, it had no prediction beside it
        from amorsize.api import optimize

        # (a short input would be computed whole by the dry run, and planned serial)
        plan = optimize(square, range(100_000), executor="threads", n_jobs=n_jobs, chunksize=4)
        assert (plan.executor, plan.n_jobs) == ("threads", n_jobs)
        found = validation._alternative_candidates(plan, 100_000, usable_cores=8)
        counts = {c.n_jobs for c in found if c.executor == "threads" and c.n_jobs < n_jobs}
        assert counts == ({halved} if halved else set())
        assert all(c.n_jobs >= 2 for c in found)


@pytest.mark.timeout(60)
def test_doctests() -> None:
    assert doctest.testmod(validation, raise_on_error=False).failed == 0
