"""Tests for amorsize.report.console: the rich report, rendered to plain text."""

from __future__ import annotations

import doctest
from collections.abc import Callable

from amorsize.report import console as console_module
from amorsize.report.console import (
    breakdown_table,
    render_text,
    result_report,
    tune_report,
    validation_report,
)
from amorsize.results import Diagnostics, OptimizationResult
from amorsize.tuning import TuneResult, TuneRow
from amorsize.validation import AlternativeTiming, ValidationResult

Decision = tuple[OptimizationResult, Diagnostics]


class TestResultReport:
    def test_has_every_section(self, cpu_decision: Decision) -> None:
        text = render_text(result_report(cpu_decision[0]), width=100)
        for heading in ("Amorsize plan: processes × 4", "Why: because", "Measured (dry run)", "Machine"):
            assert heading in text
        for column in ("startup", "dispatch", "transfer", "compute", "imbalance", "speedup"):
            assert column in text
        assert "★ processes × 4" in text
        assert "serial" in text

    def test_fits_in_80_columns_without_losing_a_column(self, io_decision: Decision) -> None:
        text = render_text(result_report(io_decision[0]), width=80)
        assert max(len(line.rstrip()) for line in text.splitlines()) <= 80
        assert "speedup" in text and "imbalance" in text

    def test_without_measurements_keeps_the_plan_table(self, cpu_decision: Decision) -> None:
        text = render_text(result_report(cpu_decision[0], measurements=False))
        assert "Measured" not in text and "Machine" not in text
        assert "Predicted time" in text

    def test_a_result_without_diagnostics_still_renders(self, cpu_decision: Decision) -> None:
        result = OptimizationResult(1, 1, "serial", "tiny work", 1.0, ("a warning",), data=[])
        text = render_text(result_report(result))
        assert "Amorsize plan: serial" in text and "warning: a warning" in text

    def test_warnings_and_reason_are_shown(
        self, decide: Callable[..., Decision], cpu_decision: Decision
    ) -> None:
        profile = cpu_decision[1].profile
        result, _ = decide(
            profile, reason="the items hold the GIL", warnings=("pickles only with cloudpickle",)
        )
        text = render_text(result_report(result), width=100)
        assert "Why: the items hold the GIL" in text
        assert "warning: pickles only with cloudpickle" in text

    def test_results_render_with_rich_print(self, cpu_decision: Decision) -> None:
        assert "Amorsize plan" in render_text(cpu_decision[0])  # __rich__


class TestBreakdownTable:
    def test_one_unit_for_the_whole_table(self, cpu_decision: Decision) -> None:
        plan = cpu_decision[1].plan
        table = breakdown_table(plan.prediction, plan.serial, plan.alternatives)
        assert table.title is not None and "(s)" in table.title  # serial takes 20 s

    def test_the_chosen_plan_is_listed_once_and_first(self, cpu_decision: Decision) -> None:
        plan = cpu_decision[1].plan
        text = render_text(
            breakdown_table(plan.prediction, plan.serial, (plan.prediction, *plan.alternatives))
        )
        rows = [line for line in text.splitlines() if "processes × 4," in line]
        assert len(rows) == 1 and "★" in rows[0]


def _validation(plan: OptimizationResult) -> ValidationResult:
    return ValidationResult(
        serial_time=2.0,
        parallel_time=0.8,
        actual_speedup=2.5,
        predicted_speedup=3.0,
        accuracy_percent=83.3,
        error=20.0,
        plan=plan,
        alternatives=(AlternativeTiming("threads", 4, 18, 1.9, 1.8),),
        n_items=2_008,
        analysis_seconds=0.1,
        predicted_seconds=0.6,
        run_seconds=0.7,
    )


def _tuning(plan: OptimizationResult) -> TuneResult:
    rows = (
        TuneRow("processes", 4, 36, 0.6, (0.55, 0.56)),
        TuneRow("processes", 4, 18, 0.62, (0.6,), recommended=True),
        TuneRow("threads", 4, 18, 1.8, (1.0,), stopped=True),
        TuneRow("serial", 1, 2000, 2.0),
    )
    return TuneResult("processes", 4, 36, 0.555, rows, plan, 0.6, n_items=2_008, elapsed_seconds=4.0)


class TestValidationReport:
    def test_shows_measured_and_predicted(self, cpu_decision: Decision) -> None:
        text = render_text(validation_report(_validation(cpu_decision[0])))
        assert "measured 2.50×" in text and "predicted 3.00×" in text and "accuracy 83%" in text
        assert "threads × 4, chunks of 18" in text  # the measured neighbour


class TestTuneReport:
    def test_marks_the_winner_and_the_model_plan(self, cpu_decision: Decision) -> None:
        text = render_text(tune_report(_tuning(cpu_decision[0])), width=110)
        assert "★ processes × 4, chunks of 36" in text
        assert "(model's plan)" in text and "(stopped)" in text
        assert "1 more candidates not measured" in text


def test_docstring_examples() -> None:
    assert doctest.testmod(console_module).failed == 0
