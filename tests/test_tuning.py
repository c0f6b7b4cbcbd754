"""tune: a bounded, measured search around the model's plan."""

from __future__ import annotations

import doctest
import math
import time
from pathlib import Path

import pytest

from amorsize import execute, tuning
from amorsize.config import load_config
from amorsize.errors import ConfigurationError
from amorsize.measure.machine import usable_cores
from amorsize.tuning import REPEATS, TuneResult, TuneRow, tune


def square(x: int) -> int:
    return x * x


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


class TestTune:
    @pytest.mark.timeout(60)
    def test_returns_the_fastest_measured_plan(self) -> None:
        result = tune(square, range(5_000), time_budget=3.0)
        assert isinstance(result, TuneResult)
        assert result.n_items == 5_000
        measured = [row for row in result.table if row.seconds and not row.stopped]
        assert measured
        assert result.best_seconds == min(row.median for row in measured)
        assert (result.executor, result.n_jobs, result.chunksize) == (
            measured[0].executor,
            measured[0].n_jobs,
            measured[0].chunksize,
        )
        assert result.best_seconds <= result.recommended_seconds
        assert result.gain >= 1.0
        recommended = [row for row in result.table if row.recommended]
        assert len(recommended) == 1 and recommended[0].seconds
        assert all(len(row.seconds) <= REPEATS for row in result.table)

    @pytest.mark.timeout(60)
    def test_stays_near_its_budget(self) -> None:
        started = time.perf_counter()
        result = tune(nap, [0.001] * 100, time_budget=1.0)
        elapsed = time.perf_counter() - started
        # the recommendation always runs once (~0.1 s here); every later run fits in what is left
        assert elapsed < 1.0 + 1.0
        assert result.elapsed_seconds <= elapsed
        assert any(not row.seconds for row in result.table) or elapsed < 1.5

    @pytest.mark.timeout(60)
    def test_a_forced_executor_restricts_the_search(self) -> None:
        result = tune(nap, [0.001] * 40, time_budget=2.0, executor="threads")
        assert {row.executor for row in result.table} == {"threads"}
        assert result.recommended.executor == "threads"

    @pytest.mark.timeout(60)
    def test_one_worker_is_not_a_trial(self) -> None:
        # serial is in the search already; a pool of one is serial plus its costs
        result = tune(nap, [0.001] * 40, time_budget=1.0, executor="processes")
        assert {row.executor for row in result.table} == {"processes"}
        if usable_cores() >= 2:
            assert min(row.n_jobs for row in result.table) >= 2

    @pytest.mark.timeout(60)
    def test_options_reproduce_the_winner(self) -> None:
        result = tune(square, list(range(2_000)), time_budget=1.0)
        options = result.options()
        assert {"executor", "n_jobs", "chunksize"} <= set(options)
        assert execute(square, range(10), **options) == [x * x for x in range(10)]

    @pytest.mark.timeout(60)
    def test_save_config_writes_a_loadable_config(self, tmp_path: Path) -> None:
        path = tmp_path / "tuned.json"
        result = tune(square, range(1_000), time_budget=1.0, save_config=path)
        config = load_config(path)
        assert (config.executor, config.n_jobs, config.chunksize) == (
            result.executor,
            result.n_jobs,
            result.chunksize,
        )
        assert config.function_name is not None and config.function_name.endswith("square")
        assert "best_seconds" in config.predicted

    @pytest.mark.timeout(60)
    def test_report(self) -> None:
        result = tune(square, range(1_000), time_budget=1.0)
        text = str(result)
        assert text.startswith("Best: ") and "Model's plan:" in text
        assert repr(result).startswith("TuneResult(best=")

    @pytest.mark.parametrize("budget", [0, -1.0, math.inf, math.nan, "10", True])
    def test_bad_budget(self, budget: object) -> None:
        with pytest.raises(ConfigurationError, match="time_budget"):
            tune(square, [1, 2], time_budget=budget)  # type: ignore[arg-type]

    def test_empty_data(self) -> None:
        with pytest.raises(ConfigurationError, match="empty"):
            tune(square, [])


class TestTuneRow:
    def test_median_and_text(self) -> None:
        row = TuneRow("processes", 2, 10, 0.5, (0.3, 0.1, 0.2))
        assert row.median == 0.2
        assert "processes × 2, chunks of 10: 0.2000s (×3)" in str(row)
        stopped = TuneRow("threads", 4, 1, 0.5, (0.9,), stopped=True)
        assert stopped.median == math.inf and "stopped" in str(stopped)
        assert TuneRow("serial", 1, 5, 0.1).median == math.inf


@pytest.mark.timeout(60)
def test_doctests() -> None:
    assert doctest.testmod(tuning, raise_on_error=False).failed == 0
