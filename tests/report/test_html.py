"""Tests for amorsize.report.html: the Jupyter view of a result."""

from __future__ import annotations

import doctest
from collections.abc import Callable

from amorsize.report import html as html_module
from amorsize.report.html import key_value_table, result_html
from amorsize.results import Diagnostics, OptimizationResult

Decision = tuple[OptimizationResult, Diagnostics]


class TestResultHtml:
    def test_tables_for_the_plan_the_measurements_and_the_breakdown(self, cpu_decision: Decision) -> None:
        html = result_html(cpu_decision[0])
        assert html.startswith('<div class="amorsize-result">') and html.endswith("</div>")
        assert html.count("<table") == 3
        for text in ("processes", "Measured (dry run)", "Predicted time", "imbalance", "★ processes × 4"):
            assert text in html

    def test_is_what_jupyter_shows(self, cpu_decision: Decision) -> None:
        result = cpu_decision[0]
        assert result._repr_html_() == result_html(result)

    def test_text_is_escaped(self, decide: Callable[..., Decision], cpu_decision: Decision) -> None:
        result, _ = decide(cpu_decision[1].profile, reason="<script>alert(1)</script>", warnings=("a & b",))
        html = result_html(result)
        assert "<script>" not in html
        assert "&lt;script&gt;" in html and "a &amp; b" in html

    def test_without_measurements_only_the_plan(self) -> None:
        result = OptimizationResult(1, 1, "serial", "tiny", 1.0, (), data=[])
        assert result_html(result).count("<table") == 1


def test_key_value_table_escapes_keys() -> None:
    assert "&lt;k&gt;" in key_value_table("t", [("<k>", "v")])


def test_docstring_examples() -> None:
    assert doctest.testmod(html_module).failed == 0


class TestValidationHtml:
    def test_measured_against_predicted(self, cpu_decision: Decision) -> None:
        from amorsize.report.html import validation_html
        from amorsize.validation import AlternativeTiming, ValidationResult

        validation = ValidationResult(
            serial_time=2.0,
            parallel_time=0.8,
            actual_speedup=2.5,
            predicted_speedup=3.0,
            accuracy_percent=83.3,
            error=20.0,
            plan=cpu_decision[0],
            alternatives=(AlternativeTiming("threads", 4, 18, 1.9, None),),
            n_items=2_008,
        )
        html = validation_html(validation)
        assert html.count("<table") == 2
        assert "measured 2.50×, predicted 3.00×" in html and "threads × 4, chunks of 18" in html
