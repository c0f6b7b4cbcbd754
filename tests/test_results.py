"""Tests for amorsize.results: what optimize returns, and how it renders, saves and plots itself."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from amorsize import load_config, optimize, optimize_streaming
from amorsize.errors import ConfigurationError
from amorsize.report.console import render_text
from amorsize.results import OptimizationResult, StreamingOptimizationResult


@pytest.fixture(scope="module")
def result() -> OptimizationResult:
    """A real decision with its measurements (abs over 3,000 items: serial, and fast)."""
    return optimize(abs, range(-1500, 1500), profile=True)


class TestOptimizationResult:
    def test_repr_and_str_stay_short(self, result: OptimizationResult) -> None:
        assert repr(result).startswith("OptimizationResult(n_jobs=1, chunksize=")
        assert "data=" not in repr(result) and "_diagnostics" not in repr(result)
        assert str(result).startswith("Recommended: serial")

    def test_measurements_are_kept_with_or_without_profile(self, result: OptimizationResult) -> None:
        assert result._measurements() is result.profile
        private = dataclasses.replace(result, profile=None, _diagnostics=result.profile)
        assert private._measurements() is result.profile
        assert private == dataclasses.replace(result, profile=None)  # not part of equality

    def test_to_dict(self, result: OptimizationResult) -> None:
        assert "profile" in result.to_dict()  # profile=True was asked
        plain = dataclasses.replace(result, profile=None, _diagnostics=result.profile)
        assert "profile" not in plain.to_dict()
        assert "profile" in plain.to_dict(include_profile=True)
        json.dumps(result.to_dict(), allow_nan=False)

    def test_to_dict_with_a_profile_it_does_not_have(self, result: OptimizationResult) -> None:
        bare = dataclasses.replace(result, profile=None, _diagnostics=None)
        with pytest.raises(ConfigurationError, match="profile=True"):
            bare.to_dict(include_profile=True)

    def test_save_config_round_trip(self, result: OptimizationResult, tmp_path: Path) -> None:
        result.save_config(tmp_path / "plan.json", function_name="builtins.abs", comment="hi")
        config = load_config(tmp_path / "plan.json")
        assert (config.executor, config.n_jobs, config.chunksize) == (result.executor, 1, result.chunksize)
        assert config.function_name == "builtins.abs" and config.comment == "hi"
        assert (
            config.machine is not None and config.machine.start_method == result.profile.machine.start_method
        )  # type: ignore[union-attr]

    def test_plot(self, result: OptimizationResult, tmp_path: Path) -> None:
        figure = result.plot(tmp_path / "plan.png")
        assert (tmp_path / "plan.png").read_bytes()[:4] == b"\x89PNG"
        assert len(figure.axes) >= 2

    def test_plot_without_measurements_says_how_to_get_them(self, result: OptimizationResult) -> None:
        with pytest.raises(ConfigurationError, match=r"optimize\(func, data, profile=True\)"):
            dataclasses.replace(result, profile=None, _diagnostics=None).plot()

    def test_html_and_rich(self, result: OptimizationResult) -> None:
        assert "<table" in result._repr_html_()
        assert "Amorsize plan: serial" in render_text(result)


class TestStreamingOptimizationResult:
    def test_renders_saves_and_plots(self, tmp_path: Path) -> None:
        streaming = optimize_streaming(abs, iter(range(500)), profile=True)
        assert isinstance(streaming, StreamingOptimizationResult)
        assert streaming.to_dict()["use_ordered"] is streaming.use_ordered
        assert "<table" in streaming._repr_html_()
        assert "Amorsize plan" in render_text(streaming)
        streaming.save_config(tmp_path / "stream.json")
        assert load_config(tmp_path / "stream.json").chunksize == streaming.chunksize
        streaming.plot(tmp_path / "stream.svg")
        assert (tmp_path / "stream.svg").exists()
