"""Tests for amorsize.config: saving a plan as JSON, reading it back, refusing broken files."""

from __future__ import annotations

import dataclasses
import doctest
import json
import warnings
from pathlib import Path
from typing import Any

import pytest

from amorsize import config as config_module
from amorsize import execute, optimize
from amorsize.config import (
    CONFIG_VERSION,
    ConfigMachine,
    ConfigMachineWarning,
    SavedConfig,
    load_config,
    save_config,
)
from amorsize.errors import ConfigurationError


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    """A config written by save_config for a 3-process plan."""
    path = tmp_path / "plan.json"
    save_config(SavedConfig("processes", 3, 40, target_chunk_duration=0.5), path, function_name="mod.func")
    return path


def rewrite(path: Path, **changes: Any) -> Path:
    """Edit the JSON file by hand, as a person would."""
    raw = json.loads(path.read_text())
    for key, value in changes.items():
        if value is ...:
            raw.pop(key)
        else:
            raw[key] = value
    path.write_text(json.dumps(raw))
    return path


class TestSaveConfig:
    def test_round_trip(self, saved: Path) -> None:
        config = load_config(saved)
        assert (config.executor, config.n_jobs, config.chunksize) == ("processes", 3, 40)
        assert config.target_chunk_duration == 0.5
        assert config.function_name == "mod.func"
        assert config.path == saved
        assert config.machine == ConfigMachine.current(start_method=config.machine.start_method)  # type: ignore[union-attr]

    def test_human_readable_json_with_version_machine_and_library(self, saved: Path) -> None:
        text = saved.read_text()
        assert text.startswith('{\n  "format": "amorsize-config",\n  "version": 1,')
        raw = json.loads(text)
        assert raw["version"] == CONFIG_VERSION
        assert {"usable_cores", "start_method", "key"} <= set(raw["machine"])
        assert raw["amorsize_version"] and raw["created"].endswith("Z")

    def test_from_an_optimize_result(self, tmp_path: Path) -> None:
        result = optimize(abs, range(-50, 50))
        written = result.save_config(tmp_path / "abs.json", function_name="abs")
        config = load_config(tmp_path / "abs.json")
        assert config == dataclasses.replace(written, path=config.path)
        assert config.executor == result.executor and config.predicted["reason"] == result.reason

    def test_no_temporary_file_is_left_behind(self, saved: Path) -> None:
        assert [p.name for p in saved.parent.iterdir()] == ["plan.json"]

    def test_a_missing_directory_is_a_configuration_error(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigurationError, match="cannot write the config"):
            save_config(SavedConfig("serial", 1, 10), tmp_path / "no" / "plan.json")

    def test_blas_threads_survive(self, tmp_path: Path) -> None:
        path = tmp_path / "blas.json"
        save_config(SavedConfig("processes", 2, 8, blas_threads=1), path)
        assert load_config(path).execute_options()["blas_threads"] == 1


class TestLoadConfig:
    def test_runs_with_execute_without_a_dry_run(self, tmp_path: Path) -> None:
        path = tmp_path / "serial.json"
        save_config(SavedConfig("serial", 1, 4), path)
        calls: list[int] = []

        def record(x: int) -> int:
            calls.append(x)
            return x * 2

        assert execute(record, range(10), **load_config(path).execute_options()) == [x * 2 for x in range(10)]
        assert calls == list(range(10))  # once per item: no dry run

    def test_serial_means_one_worker(self, saved: Path) -> None:
        assert load_config(rewrite(saved, executor="serial", n_jobs=8)).n_jobs == 1

    def test_a_comment_may_be_added_by_hand(self, saved: Path) -> None:
        assert (
            load_config(rewrite(saved, comment="tuned on the build box")).comment == "tuned on the build box"
        )

    @pytest.mark.parametrize(
        ("changes", "problem"),
        [
            ({"format": "something"}, "not an Amorsize config"),
            ({"version": 99}, "newer Amorsize"),
            ({"version": 0}, "version 0 is not supported"),
            ({"version": "1"}, '"version" must be an integer'),
            ({"n_job": 4}, "unknown key 'n_job'"),
            ({"executor": "dask"}, '"executor" must be one of'),
            ({"n_jobs": 0}, '"n_jobs" must be an integer >= 1'),
            ({"n_jobs": True}, '"n_jobs" must be an integer >= 1'),
            ({"chunksize": 2.5}, '"chunksize" must be an integer >= 1'),
            ({"chunksize": ...}, '"chunksize" must be an integer >= 1'),
            ({"target_chunk_duration": -1}, "positive number of seconds"),
            ({"blas_threads": 0}, '"blas_threads" must be'),
            ({"function": 3}, '"function" must be a string'),
            ({"predicted": [1]}, '"predicted" must be an object'),
            ({"machine": {"key": "x"}}, '"machine.usable_cores" must be'),
            ({"machine": "laptop"}, '"machine" must be an object'),
        ],
    )
    def test_a_broken_file_names_itself_and_the_problem(
        self, saved: Path, changes: dict[str, Any], problem: str
    ) -> None:
        rewrite(saved, **changes)
        with pytest.raises(ConfigurationError) as caught:
            load_config(saved)
        assert str(saved) in str(caught.value)
        assert problem in str(caught.value)

    def test_not_json(self, saved: Path) -> None:
        saved.write_text('{"format": "amorsize-config",\n  "version": 1,,\n}')
        with pytest.raises(ConfigurationError, match=r"not valid JSON: .* at line 2, column 16"):
            load_config(saved)

    def test_not_an_object(self, saved: Path) -> None:
        saved.write_text("[1, 2]")
        with pytest.raises(ConfigurationError, match="expected a JSON object"):
            load_config(saved)

    def test_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigurationError, match="does not exist"):
            load_config(tmp_path / "nope.json")

    def test_code_in_a_file_is_never_run(self, saved: Path) -> None:
        rewrite(saved, executor="__import__('os').system('touch pwned')")
        with pytest.raises(ConfigurationError, match="executor"):
            load_config(saved)
        assert not (saved.parent / "pwned").exists()

    def test_another_machine_warns(self, saved: Path) -> None:
        raw = json.loads(saved.read_text())
        raw["machine"].update(key="elsewhere|linux|CPython|Big CPU|64 cores|fork", usable_cores=64)
        saved.write_text(json.dumps(raw))
        with pytest.warns(ConfigMachineWarning, match="measured on another machine") as caught:
            load_config(saved)
        assert "64 usable cores" in str(caught[0].message)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            load_config(saved, check_machine=False)

    def test_too_many_workers_for_this_machine_says_so(self, saved: Path) -> None:
        raw = json.loads(saved.read_text())
        raw["machine"]["key"] = "elsewhere"
        raw["n_jobs"] = 512
        saved.write_text(json.dumps(raw))
        with pytest.warns(ConfigMachineWarning, match="asks for 512 workers"):
            load_config(saved)

    def test_the_same_machine_does_not_warn(self, saved: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            load_config(saved)


class TestSavedConfig:
    def test_str(self) -> None:
        assert str(SavedConfig("threads", 8, 2)) == "saved plan: threads × 8, chunks of 2"


def test_docstring_examples() -> None:
    assert doctest.testmod(config_module).failed == 0
