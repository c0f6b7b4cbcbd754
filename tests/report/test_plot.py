"""Tests for amorsize.report.plot: the numbers behind the plot (pure) and the drawing (matplotlib, Agg)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from amorsize.core.planner import MAX_THREADS
from amorsize.errors import ConfigurationError, MissingExtraError
from amorsize.report.plot import MeasuredPoint, plot, plot_data, supported_formats
from amorsize.results import Diagnostics, OptimizationResult

Decision = tuple[OptimizationResult, Diagnostics]


class TestPlotData:
    def test_curves_follow_the_chosen_executor_and_include_its_chunk_size(
        self, cpu_decision: Decision
    ) -> None:
        result, diagnostics = cpu_decision
        data = plot_data(diagnostics)
        assert {curve.executor for curve in data.curves} == {"processes"}
        assert result.chunksize in {curve.chunksize for curve in data.curves}
        assert len(data.curves) <= 4

    def test_the_chosen_point_lies_on_its_curve(self, cpu_decision: Decision) -> None:
        result, diagnostics = cpu_decision
        data = plot_data(diagnostics)
        curve = next(c for c in data.curves if c.chunksize == result.chunksize)
        on_curve = curve.speedups[curve.workers.index(result.n_jobs)]
        assert on_curve == pytest.approx(data.chosen_speedup, rel=1e-6)

    def test_n_items_is_read_back_from_the_plan(self, cpu_decision: Decision) -> None:
        _, diagnostics = cpu_decision
        assert plot_data(diagnostics).n_items == 2_000

    def test_one_worker_is_no_faster_than_serial(self, cpu_decision: Decision) -> None:
        for curve in plot_data(cpu_decision[1]).curves:
            assert curve.workers[0] == 1
            assert curve.speedups[0] <= 1.0 + 1e-9

    def test_threads_stop_where_the_planner_stops(self, io_decision: Decision) -> None:
        result, diagnostics = io_decision
        data = plot_data(diagnostics)
        assert result.executor == "threads"
        top = max(curve.workers[-1] for curve in data.curves)
        assert result.n_jobs <= top <= max(MAX_THREADS, result.n_jobs)

    def test_a_serial_plan_still_shows_what_parallel_would_give(self, serial_decision: Decision) -> None:
        _, diagnostics = serial_decision
        data = plot_data(diagnostics)
        assert data.chosen.candidate.executor == "serial"
        assert data.chosen_speedup == 1.0
        assert all(curve.executor != "serial" for curve in data.curves)
        assert all(s < 1.0 for curve in data.curves for s in curve.speedups[1:])  # parallel loses here

    def test_bars_hold_the_chosen_plan_first_and_no_duplicates(self, cpu_decision: Decision) -> None:
        _, diagnostics = cpu_decision
        bars = plot_data(diagnostics).bars
        assert bars[0] is diagnostics.plan.prediction
        assert len({bar.candidate for bar in bars}) == len(bars)

    def test_measured_points_are_carried(self, cpu_decision: Decision) -> None:
        point = MeasuredPoint(4, 3.1)
        assert plot_data(cpu_decision[1], measured=[point]).measured == (point,)


class TestPlot:
    @pytest.mark.parametrize("suffix", ["png", "svg"])
    def test_writes_the_file(self, cpu_decision: Decision, tmp_path: Path, suffix: str) -> None:
        path = tmp_path / f"plan.{suffix}"
        figure = plot(cpu_decision[1], path, measured=[MeasuredPoint(4, 3.0, "measured run")])
        assert path.stat().st_size > 1000
        if suffix == "png":
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        left, right = figure.axes[:2]
        labels = [text.get_text() for text in left.get_legend().get_texts()]
        assert any(label.startswith("chosen: processes × 4") for label in labels)
        assert any(label.startswith("measured run: 3.00×") for label in labels)
        assert "overhead" in right.get_title()

    def test_without_a_path_it_only_returns_the_figure(self, io_decision: Decision) -> None:
        figure = plot(io_decision[1])
        assert figure.axes[0].get_xscale() == "log"  # 64 threads: a log axis

    def test_serial_plans_plot_too(self, serial_decision: Decision, tmp_path: Path) -> None:
        plot(serial_decision[1], tmp_path / "serial.png")
        assert (tmp_path / "serial.png").exists()

    def test_an_unwritable_path_is_a_configuration_error(
        self, cpu_decision: Decision, tmp_path: Path
    ) -> None:
        with pytest.raises(ConfigurationError, match="cannot save the plot"):
            plot(cpu_decision[1], tmp_path / "missing-dir" / "plan.png")

    def test_missing_matplotlib_names_the_extra(
        self, cpu_decision: Decision, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
        with pytest.raises(MissingExtraError, match=r"amorsize\[plot\]"):
            plot(cpu_decision[1])

    def test_supported_formats(self) -> None:
        assert {"png", "svg", "pdf"} <= supported_formats()
