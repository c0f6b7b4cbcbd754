"""Tests for the command line: in-process through ``main(argv)`` for speed, and real ``python -m amorsize``
subprocesses for what a shell sees (exit codes, one-line errors, no tracebacks)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from amorsize.cli import EXIT_FAILURE, EXIT_FUNCTION_FAILED, EXIT_USAGE, main
from amorsize.cli._inputs import UsageError, load_function, read_data
from amorsize.cli._output import LongRunProgress
from amorsize.run.hooks import RunInfo
from amorsize.run.report import ChunkRecord, RunReport

USER_CODE = """
import os
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def double(x):
    return int(x) * 2


def logged(x):
    with open(os.path.join(HERE, "calls.log"), "a") as log:
        log.write(f"{x}\\n")
    return int(x) + 1


def fail_at_37(x):
    if int(x) == 37:
        raise ValueError(f"bad item {x}")
    time.sleep(0.0005)
    return int(x)


def fail_always(x):
    raise KeyError("no such record")


def echo(x):
    return x


class Box:
    @staticmethod
    def triple(x):
        return x * 3


NOT_A_FUNCTION = 3
"""


@pytest.fixture
def user_module(tmp_path: Path) -> Callable[[str], str]:
    """Write the user's functions to a uniquely named file; returns ``FUNC`` for a function name."""
    path = tmp_path / f"userfuncs_{uuid.uuid4().hex[:8]}.py"
    path.write_text(USER_CODE)
    return lambda name: f"{path}:{name}"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private, empty Amorsize home (store, history) for this test only."""
    monkeypatch.setenv("AMORSIZE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``main(argv)`` in this process: (exit code, stdout, stderr)."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def calls(func: str) -> list[str]:
    log = Path(func.rsplit(":", 1)[0]).parent / "calls.log"
    return log.read_text().split() if log.exists() else []


# -- help --------------------------------------------------------------------------------------------

COMMANDS = [
    [],
    ["demo"],
    ["optimize"],
    ["execute"],
    ["validate"],
    ["tune"],
    ["history"],
    ["store"],
    ["store", "info"],
    ["store", "clear"],
    ["dlq"],
    ["dlq", "list"],
    ["dlq", "export"],
    ["dlq", "replay"],
    ["dlq", "clear"],
]


class TestHelp:
    @pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "amorsize")
    def test_every_command_has_an_example(
        self, capsys: pytest.CaptureFixture[str], command: list[str]
    ) -> None:
        code, out, _ = run(capsys, *command, "--help")
        assert code == 0
        assert "examples:" in out
        assert "amorsize " + " ".join(command) in out.split("examples:")[1]

    def test_version(self, capsys: pytest.CaptureFixture[str]) -> None:
        code, out, _ = run(capsys, "--version")
        assert code == 0 and out.startswith("amorsize ")


# -- FUNC and data ------------------------------------------------------------------------------------


class TestLoadFunction:
    @pytest.mark.parametrize(
        ("spec", "argument", "expected"),
        [
            ("math.factorial", 5, 120),
            ("math:factorial", 5, 120),
            ("os.path.basename", "/a/b", "b"),
            ("os.path:basename", "/a/b", "b"),
            ("collections.OrderedDict.fromkeys", "ab", {"a": None, "b": None}),
        ],
    )
    def test_module_forms(self, spec: str, argument: Any, expected: Any) -> None:
        assert load_function(spec)(argument) == expected

    def test_a_file(self, user_module: Callable[[str], str]) -> None:
        assert load_function(user_module("double"))(4) == 8
        assert load_function(user_module("Box.triple"))(2) == 6

    def test_a_file_named_like_a_loaded_module_still_pickles(self, tmp_path: Path) -> None:
        import pickle

        import cloudpickle

        (tmp_path / "json.py").write_text("def half(x):\n    return x / 2\n")
        half = load_function(f"{tmp_path / 'json.py'}:half")
        assert half(3) == 1.5
        assert pickle.loads(cloudpickle.dumps(half))(5) == 2.5  # shipped by value

    @pytest.mark.parametrize(
        ("spec", "message"),
        [
            ("nosuchmodule_xyz.func", "cannot import module 'nosuchmodule_xyz'"),
            ("nosuchmodule_xyz:func", "cannot import module 'nosuchmodule_xyz'"),
            ("math.nosuch", "module 'math' has no attribute 'nosuch'"),
            ("math:", "names no function after ':'"),
            ("double", "FUNC must look like"),
            ("missing_file.py:f", "no such file 'missing_file.py'"),
        ],
    )
    def test_mistakes(self, spec: str, message: str) -> None:
        with pytest.raises(UsageError, match=message):
            load_function(spec)

    def test_not_callable(self, user_module: Callable[[str], str]) -> None:
        with pytest.raises(UsageError, match="is not a function"):
            load_function(user_module("NOT_A_FUNCTION"))

    @pytest.mark.parametrize(
        ("source", "message"),
        [
            ("def broken(:\n", "syntax error at .*line 1"),
            ("raise RuntimeError('no config')\n", "raised RuntimeError: no config"),
            ("import nonexistent_dependency_xyz\n", "No module named 'nonexistent_dependency_xyz'"),
        ],
    )
    def test_a_module_that_fails_to_import(self, tmp_path: Path, source: str, message: str) -> None:
        path = tmp_path / f"bad_{uuid.uuid4().hex[:8]}.py"
        path.write_text(source)
        with pytest.raises(UsageError, match=message):
            load_function(f"{path}:f")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class TestReadData:
    def test_range(self) -> None:
        assert read_data(data_range=3, data_file=None, data_jsonl=None) == range(3)

    def test_file_of_lines(self, tmp_path: Path) -> None:
        (tmp_path / "items.txt").write_text("a\nb b\r\n\nc\n")
        assert read_data(data_range=None, data_file=str(tmp_path / "items.txt"), data_jsonl=None) == [
            "a",
            "b b",
            "",
            "c",
        ]

    def test_jsonl(self, tmp_path: Path) -> None:
        (tmp_path / "items.jsonl").write_text('{"a": 1}\n\n[2, 3]\n"x"\n')
        items = read_data(data_range=None, data_file=None, data_jsonl=str(tmp_path / "items.jsonl"))
        assert items == [{"a": 1}, [2, 3], "x"]

    def test_jsonl_names_the_bad_line(self, tmp_path: Path) -> None:
        (tmp_path / "items.jsonl").write_text("1\n2\n{oops\n")
        with pytest.raises(UsageError, match=r"line 3 of .* is not JSON"):
            read_data(data_range=None, data_file=None, data_jsonl=str(tmp_path / "items.jsonl"))

    def test_standard_input(self) -> None:
        piped = io.StringIO("x\ny\n")
        assert read_data(data_range=None, data_file=None, data_jsonl=None, stdin=piped) == ["x", "y"]
        dash = io.StringIO("[1]\n")
        assert read_data(data_range=None, data_file=None, data_jsonl="-", stdin=dash) == [[1]]

    def test_no_data(self) -> None:
        with pytest.raises(UsageError, match="no data: give --data-range"):
            read_data(data_range=None, data_file=None, data_jsonl=None, stdin=_Terminal())
        with pytest.raises(UsageError, match="standard input was empty"):
            read_data(data_range=None, data_file=None, data_jsonl=None, stdin=io.StringIO(""))

    def test_missing_or_directory(self, tmp_path: Path) -> None:
        with pytest.raises(UsageError, match="no such file"):
            read_data(data_range=None, data_file=str(tmp_path / "nope"), data_jsonl=None)
        with pytest.raises(UsageError, match="is a directory"):
            read_data(data_range=None, data_file=str(tmp_path), data_jsonl=None)


# -- optimize ----------------------------------------------------------------------------------------


class TestOptimize:
    def test_json_is_one_object_with_the_plan(self, capsys: pytest.CaptureFixture[str]) -> None:
        code, out, _ = run(capsys, "optimize", "math.factorial", "--data-range", "300", "--json")
        assert code == 0 and out.count("\n") == 1
        fields = json.loads(out)
        assert {"n_jobs", "chunksize", "executor", "estimated_speedup", "reason", "warnings"} <= set(fields)
        assert "profile" not in fields

    def test_json_profile(self, capsys: pytest.CaptureFixture[str]) -> None:
        code, out, _ = run(capsys, "optimize", "math.factorial", "--data-range", "300", "--json", "--profile")
        profile = json.loads(out)["profile"]
        assert code == 0 and {"measured", "machine", "breakdown", "alternatives"} <= set(profile)

    def test_human_report(self, capsys: pytest.CaptureFixture[str]) -> None:
        code, out, _ = run(capsys, "optimize", "math.factorial", "--data-range", "3000")
        assert code == 0 and "Amorsize plan: serial" in out and "Why:" in out
        assert "Measured" not in out
        _, full, _ = run(capsys, "optimize", "math.factorial", "--data-range", "3000", "--profile")
        assert "Measured (dry run)" in full and "Machine" in full

    def test_verbose_json_puts_the_report_on_stderr(self, capsys: pytest.CaptureFixture[str]) -> None:
        code, out, err = run(capsys, "optimize", "math.factorial", "--data-range", "300", "--json", "-v")
        assert code == 0 and json.loads(out) and "Measured (dry run)" in err

    def test_save_config_and_plot(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        config, picture = tmp_path / "plan.json", tmp_path / "plan.png"
        code, _, err = run(
            capsys, "optimize", "math.factorial", "--data-range", "300",
            "--save-config", str(config), "--plot", str(picture),
        )  # fmt: skip
        assert code == 0
        assert json.loads(config.read_text())["function"] == "math.factorial"
        assert picture.read_bytes()[:4] == b"\x89PNG"
        assert f"plan saved to {config}" in err and f"plot written to {picture}" in err

    def test_output_paths_are_checked_before_any_work(
        self, capsys: pytest.CaptureFixture[str], user_module: Callable[[str], str], tmp_path: Path
    ) -> None:
        func = user_module("logged")
        code, out, err = run(
            capsys, "optimize", func, "--data-range", "50", "--plot", str(tmp_path / "p.xyz")
        )
        assert code == EXIT_USAGE and out == "" and "--plot: cannot write" in err and ".png" in err
        code, _, err = run(
            capsys, "optimize", func, "--data-range", "5", "--save-config", "/no/such/dir/p.json"
        )
        assert code == EXIT_USAGE and "does not exist" in err
        assert calls(func) == []

    def test_a_bad_option_value_is_a_usage_error(self, capsys: pytest.CaptureFixture[str]) -> None:
        code, _, err = run(capsys, "optimize", "math.factorial", "--data-range", "5", "--n-jobs", "0")
        assert code == EXIT_USAGE and err.startswith(
            "amorsize: error: argument --n-jobs: must be >= 1 (got 0)"
        )

    def test_an_option_is_never_abbreviated(self, capsys: pytest.CaptureFixture[str]) -> None:
        # argparse's default would take --data-json for --data-jsonl and read the JSON as a file name
        code, _, err = run(capsys, "optimize", "math.factorial", "--data-json", "[1, 2]")
        assert code == EXIT_USAGE and "unrecognized arguments: --data-json" in err
        code, _, err = run(capsys, "optimize", "math.factorial", "--data-range", "5", "--samp", "3")
        assert (
            code == EXIT_USAGE and "unrecognized arguments: --samp 3 (see `amorsize optimize --help`)" in err
        )


# -- execute -----------------------------------------------------------------------------------------


class TestExecute:
    def test_results_as_json_lines_in_order(
        self, capsys: pytest.CaptureFixture[str], user_module: Callable[[str], str]
    ) -> None:
        code, out, _ = run(capsys, "execute", user_module("double"), "--data-range", "20")
        assert code == 0 and [json.loads(line) for line in out.splitlines()] == [2 * x for x in range(20)]

    def test_json(self, capsys: pytest.CaptureFixture[str], user_module: Callable[[str], str]) -> None:
        code, out, _ = run(capsys, "execute", user_module("double"), "--data-range", "20", "--json")
        payload = json.loads(out)
        assert code == 0 and payload["results"] == [2 * x for x in range(20)]
        assert {"executor", "n_jobs", "chunksize", "reason"} <= set(payload["plan"])
        assert payload["run"]["status"] == "completed" and payload["run"]["n_items"] == 20

    def test_output_file(
        self, capsys: pytest.CaptureFixture[str], user_module: Callable[[str], str], tmp_path: Path
    ) -> None:
        items = tmp_path / "items.jsonl"
        items.write_text('{"a": [1, 2]}\n"text"\n3.5\nnull\n')
        out_path = tmp_path / "out.jsonl"
        code, out, _ = run(
            capsys, "execute", user_module("echo"), "--data-jsonl", str(items), "-o", str(out_path)
        )
        assert code == 0 and out == ""
        assert out_path.read_text() == '{"a": [1, 2]}\n"text"\n3.5\nnull\n'

    def test_each_item_runs_exactly_once(
        self, capsys: pytest.CaptureFixture[str], user_module: Callable[[str], str]
    ) -> None:
        func = user_module("logged")
        code, out, _ = run(capsys, "execute", func, "--data-range", "60")
        assert code == 0 and len(out.splitlines()) == 60
        assert sorted(map(int, calls(func))) == list(range(60))

    def test_standard_input(
        self,
        capsys: pytest.CaptureFixture[str],
        user_module: Callable[[str], str],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setattr(sys, "stdin", io.StringIO("3\n4\n"))
        code, out, _ = run(capsys, "execute", user_module("double"))
        assert code == 0 and out.split() == ["6", "8"]

    def test_load_config_skips_the_dry_run_and_flags_override_it(
        self, capsys: pytest.CaptureFixture[str], user_module: Callable[[str], str], tmp_path: Path
    ) -> None:
        func = user_module("logged")
        config = tmp_path / "plan.json"
        code, _, _ = run(
            capsys, "execute", user_module("double"), "--data-range", "5",
            "--executor", "threads", "--n-jobs", "2", "--chunksize", "3", "--save-config", str(config),
        )  # fmt: skip
        assert code == 0 and json.loads(config.read_text())["executor"] == "threads"
        code, out, _ = run(
            capsys, "execute", func, "--data-range", "30", "--load-config", str(config), "--json"
        )
        payload = json.loads(out)
        assert code == 0 and payload["plan"] == {"executor": "threads", "n_jobs": 2, "chunksize": 3}
        assert sorted(map(int, calls(func))) == list(range(30))  # no dry run: once per item
        code, out, _ = run(
            capsys,
            "execute",
            func,
            "--data-range",
            "4",
            "--load-config",
            str(config),
            "--n-jobs",
            "1",
            "--json",
        )
        assert json.loads(out)["plan"]["n_jobs"] == 1

    def test_a_broken_config_is_a_usage_error(
        self, capsys: pytest.CaptureFixture[str], user_module: Callable[[str], str], tmp_path: Path
    ) -> None:
        (tmp_path / "plan.json").write_text('{"format": "amorsize-config", "version": 1, "executor": "gpu"}')
        code, _, err = run(capsys, "execute", user_module("double"), "--data-range", "3", "--load-config",
                           str(tmp_path / "plan.json"))  # fmt: skip
        assert code == EXIT_USAGE and "plan.json" in err and '"executor" must be one of' in err

    def test_the_function_failing_is_exit_3(
        self, capsys: pytest.CaptureFixture[str], user_module: Callable[[str], str]
    ) -> None:
        code, out, err = run(capsys, "execute", user_module("fail_always"), "--data-range", "10")
        assert code == EXIT_FUNCTION_FAILED and out == ""
        expected = "the function raised KeyError on item 0 during the dry run: 'no such record'"
        assert err == f"amorsize: the function failed: {expected}\n"

    def test_collect_keeps_going_then_exits_3(
        self, capsys: pytest.CaptureFixture[str], user_module: Callable[[str], str]
    ) -> None:
        code, out, err = run(
            capsys, "execute", user_module("fail_at_37"), "--data-range", "60", "--on-error", "collect"
        )
        values = [json.loads(line) for line in out.splitlines()]
        assert code == EXIT_FUNCTION_FAILED
        assert values[37] is None and values[36] == 36 and len(values) == 60
        assert "failed on 1 of 60 items (first: item 37: ValueError: bad item 37)" in err

    def test_a_file_function_runs_in_worker_processes(
        self, capsys: pytest.CaptureFixture[str], user_module: Callable[[str], str]
    ) -> None:
        code, out, _ = run(
            capsys, "execute", user_module("double"), "--data-range", "40", "--json",
            "--executor", "processes", "--n-jobs", "2", "--chunksize", "5",
        )  # fmt: skip
        payload = json.loads(out)
        assert code == 0 and payload["results"] == [2 * x for x in range(40)]
        assert payload["plan"]["executor"] == "processes"

    def test_checkpoint_is_passed_only_when_execute_takes_it(
        self, capsys: pytest.CaptureFixture[str], user_module: Callable[[str], str], tmp_path: Path
    ) -> None:
        from amorsize.cli._commands import _execute_supports

        code, out, err = run(capsys, "execute", user_module("double"), "--data-range", "10",
                             "--checkpoint", str(tmp_path / "ck"))  # fmt: skip
        if _execute_supports("checkpoint"):
            assert code == 0 and len(out.splitlines()) == 10
        else:
            assert code == EXIT_USAGE and "--checkpoint is not supported" in err

    def test_plot_without_measurements_warns(
        self, capsys: pytest.CaptureFixture[str], user_module: Callable[[str], str], tmp_path: Path
    ) -> None:
        code, _, err = run(
            capsys, "execute", user_module("double"), "--data-range", "5", "--plot", str(tmp_path / "p.png"),
            "--executor", "serial", "--n-jobs", "1", "--chunksize", "5",
        )  # fmt: skip
        assert code == 0 and "warning: no plot written" in err


# -- validate and tune -------------------------------------------------------------------------------


class TestValidate:
    @pytest.mark.timeout(60)
    def test_json_and_plot(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        picture = tmp_path / "check.png"
        code, out, err = run(
            capsys, "validate", "math.factorial", "--data-range", "400", "--json", "--plot", str(picture)
        )
        fields = json.loads(out)
        assert code == 0
        assert {
            "serial_time",
            "parallel_time",
            "actual_speedup",
            "predicted_speedup",
            "accuracy_percent",
        } <= set(fields)
        assert picture.exists() and "plot written" in err

    def test_human(self, capsys: pytest.CaptureFixture[str]) -> None:
        code, out, _ = run(capsys, "validate", "math.factorial", "--data-range", "100")
        assert code == 0 and "Validation of serial" in out

    def test_not_available(self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setitem(sys.modules, "amorsize.validation", None)
        code, _, err = run(capsys, "validate", "math.factorial", "--data-range", "10")
        assert code == EXIT_USAGE and "not available in this build" in err


class TestTune:
    @pytest.mark.timeout(60)
    def test_json_and_save_config(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        config = tmp_path / "tuned.json"
        code, out, _ = run(
            capsys, "tune", "math.factorial", "--data-range", "200", "--time-budget", "1",
            "--json", "--save-config", str(config),
        )  # fmt: skip
        fields = json.loads(out)
        assert code == 0 and {"executor", "n_jobs", "chunksize", "best_seconds", "table"} <= set(fields)
        saved = json.loads(config.read_text())
        assert (saved["executor"], saved["n_jobs"], saved["chunksize"]) == (
            fields["executor"],
            fields["n_jobs"],
            fields["chunksize"],
        )


# -- store, history, dead letters --------------------------------------------------------------------


class TestHistoryAndStore:
    def test_history(
        self, capsys: pytest.CaptureFixture[str], home: Path, user_module: Callable[[str], str]
    ) -> None:
        code, _, err = run(capsys, "history")
        assert code == 0 and "no runs recorded yet" in err
        run(capsys, "execute", user_module("double"), "--data-range", "30")
        run(capsys, "execute", "math.factorial", "--data-range", "30")
        code, out, _ = run(capsys, "history", "--json")
        runs = [json.loads(line) for line in out.splitlines()]
        assert code == 0 and [r["function_name"] for r in runs] == [
            "math.factorial",
            runs[1]["function_name"],
        ]
        assert runs[1]["function_name"].endswith(".double")
        code, out, _ = run(capsys, "history", "--json", "--function", "double")
        assert [json.loads(line)["n_items"] for line in out.splitlines()] == [30]
        code, out, _ = run(capsys, "history")
        assert code == 0 and "math.factorial" in out and "measured" in out

    def test_store_info_and_clear(
        self, capsys: pytest.CaptureFixture[str], home: Path, user_module: Callable[[str], str]
    ) -> None:
        run(capsys, "execute", user_module("double"), "--data-range", "30")
        code, out, _ = run(capsys, "store", "info", "--json")
        info = json.loads(out)
        assert code == 0 and info["path"].startswith(str(home)) and info["runs"] == 1
        assert "runs" in info["tables"] and info["schema_version"] >= 1
        code, out, _ = run(capsys, "store", "info")
        assert code == 0 and str(home) in out
        code, _, err = run(capsys, "store", "clear", "--history")
        assert code == EXIT_USAGE and "add --yes" in err
        code, _, err = run(capsys, "store", "clear")
        assert code == EXIT_USAGE and "say what to clear" in err
        code, _, err = run(capsys, "store", "clear", "--all", "--yes")
        assert code == 0 and "cleared history: 1 runs removed" in err
        _, out, _ = run(capsys, "store", "info", "--json")
        assert json.loads(out)["runs"] == 0 and json.loads(out)["namespaces"] == {}


class TestDlq:
    def test_dead_letters_from_execute_to_replay(
        self, capsys: pytest.CaptureFixture[str], user_module: Callable[[str], str], tmp_path: Path
    ) -> None:
        queue = ["--dlq-dir", str(tmp_path / "dlq"), "--dlq-name", "nightly"]
        code, out, err = run(
            capsys, "execute", user_module("fail_at_37"), "--data-range", "60", "--on-error", "dlq", *queue
        )
        assert code == EXIT_FUNCTION_FAILED and json.loads(out.splitlines()[37]) is None
        assert "see `amorsize dlq list`" in err

        code, out, _ = run(capsys, "dlq", "list", "--json", *queue)
        (entry,) = [json.loads(line) for line in out.splitlines()]
        assert code == 0 and entry["item"] == 37 and entry["error_type"] == "ValueError"
        assert entry["metadata"]["index"] == 37
        code, out, _ = run(capsys, "dlq", "list", *queue)
        assert code == 0 and "ValueError: bad item 37" in out and "nightly" in out

        code, _, _ = run(capsys, "dlq", "export", str(tmp_path / "failed.json"), *queue)
        exported = json.loads((tmp_path / "failed.json").read_text())
        assert code == 0 and [e["item"] for e in exported["entries"]] == [37]

        code, out, _ = run(capsys, "dlq", "replay", user_module("fail_at_37"), "--json", *queue)
        assert code == EXIT_FUNCTION_FAILED and json.loads(out) == {"recovered": 0, "still_failed": 1}
        recovered = tmp_path / "recovered.jsonl"
        code, _, err = run(capsys, "dlq", "replay", user_module("double"), "-o", str(recovered), *queue)
        assert code == 0 and recovered.read_text() == "74\n" and "1 recovered, 0 still failing" in err

        code, _, err = run(capsys, "dlq", "list", *queue)
        assert code == 0 and "is empty" in err

    def test_clear_needs_yes(
        self, capsys: pytest.CaptureFixture[str], user_module: Callable[[str], str], tmp_path: Path
    ) -> None:
        queue = ["--dlq-dir", str(tmp_path / "dlq")]
        run(capsys, "execute", user_module("fail_at_37"), "--data-range", "60", "--on-error", "dlq", *queue)
        code, _, err = run(capsys, "dlq", "clear", *queue)
        assert code == EXIT_USAGE and "this would delete 1 dead letters; add --yes" in err
        code, _, err = run(capsys, "dlq", "clear", "--yes", *queue)
        assert code == 0 and "cleared 1 dead letters" in err

    def test_queue_options_need_on_error_dlq(
        self, capsys: pytest.CaptureFixture[str], user_module: Callable[[str], str], tmp_path: Path
    ) -> None:
        code, _, err = run(
            capsys, "execute", user_module("double"), "--data-range", "5", "--dlq-dir", str(tmp_path)
        )
        assert code == EXIT_USAGE and "--on-error dlq" in err


class TestRetries:
    def test_retries_are_counted(
        self, capsys: pytest.CaptureFixture[str], user_module: Callable[[str], str], tmp_path: Path
    ) -> None:
        queue = ["--dlq-dir", str(tmp_path / "dlq")]
        code, _, _ = run(
            capsys, "execute", user_module("fail_at_37"), "--data-range", "60",
            "--on-error", "dlq", "--retries", "1", *queue,
        )  # fmt: skip
        _, out, _ = run(capsys, "dlq", "list", "--json", *queue)
        assert code == EXIT_FUNCTION_FAILED and json.loads(out)["retry_count"] == 1


# -- progress ----------------------------------------------------------------------------------------


def _info() -> RunInfo:
    return RunInfo("threads", 2, 100, 10, 0.2, 4, True, "raise", items_from_dry_run=5)


def _report() -> RunReport:
    return RunReport("threads", 2, "completed", 100, 100, 3.0, 5.0, 5.0, 10, 10, 10)


class TestLongRunProgress:
    def test_short_runs_draw_nothing(self) -> None:
        now = [0.0]
        progress = LongRunProgress(enabled=True, clock=lambda: now[0])
        progress.on_run_start(_info())
        now[0] = 0.5
        progress.on_chunk_done(ChunkRecord(0, 5, 10, 0.4))
        progress.on_run_end(_report())
        assert progress.bar is None

    def test_long_runs_get_a_bar_that_counts_what_was_done(self) -> None:
        now = [0.0]
        progress = LongRunProgress(enabled=True, clock=lambda: now[0])
        progress.on_run_start(_info())
        progress.on_chunk_done(ChunkRecord(0, 5, 10, 0.4))
        now[0] = 2.0
        progress.on_chunk_done(ChunkRecord(1, 15, 10, 0.4))
        assert progress.bar is not None and progress.bar._progress is not None
        task = progress.bar._progress.tasks[0]
        assert task.completed == 25  # 5 from the dry run + two chunks of 10
        progress.on_chunk_done(ChunkRecord(2, 25, 10, 0.4))
        assert task.completed == 35
        progress.on_run_end(_report())
        assert progress.bar._progress is None

    def test_off_when_not_enabled(self) -> None:
        now = [0.0]
        progress = LongRunProgress(enabled=False, clock=lambda: now[0])
        progress.on_run_start(_info())
        now[0] = 5.0
        progress.on_chunk_done(ChunkRecord(0, 5, 10, 0.4))
        assert progress.bar is None


# -- demo --------------------------------------------------------------------------------------------


class TestDemo:
    def test_list_and_one_workload(self, capsys: pytest.CaptureFixture[str]) -> None:
        code, out, _ = run(capsys, "demo", "--list")
        assert code == 0 and "tiny" in out and "io" in out
        code, out, _ = run(capsys, "demo", "--workload", "tiny", "--json")
        row = json.loads(out)
        assert code == 0 and row["workload"] == "tiny" and row["plan"] == "serial"

    def test_unknown_workload(self, capsys: pytest.CaptureFixture[str]) -> None:
        code, _, err = run(capsys, "demo", "--workload", "gpu")
        assert code == EXIT_USAGE and "unknown workload 'gpu'" in err


# -- real processes: what a shell sees ---------------------------------------------------------------


def shell(
    *argv: str, cwd: Path, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``python -m amorsize ARGV`` in a subprocess, with this session's private Amorsize home."""
    return subprocess.run(
        [sys.executable, "-m", "amorsize", *argv],
        cwd=cwd,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "100"},
    )


def assert_one_line_error(done: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert done.returncode == code, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert text in done.stderr
    assert "Traceback" not in done.stderr


class TestShell:
    @pytest.mark.timeout(60)
    def test_optimize_json(self, tmp_path: Path) -> None:
        done = shell("optimize", "math.factorial", "--data-range", "100", "--json", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["executor"] == "serial"

    @pytest.mark.timeout(60)
    def test_usage_errors_are_one_line_and_exit_2(self, tmp_path: Path) -> None:
        assert_one_line_error(
            shell("optimize", "nosuchmodule_xyz.f", "--data-range", "5", cwd=tmp_path),
            EXIT_USAGE,
            "cannot import",
        )
        assert_one_line_error(
            shell("optimize", "math.factorial", "--data-rnage", "5", cwd=tmp_path), EXIT_USAGE, "unrecognized"
        )
        assert_one_line_error(shell("optimize", "math.factorial", cwd=tmp_path), EXIT_USAGE, "no data")

    @pytest.mark.timeout(60)
    def test_the_function_failing_is_one_line_and_exit_3(self, tmp_path: Path) -> None:
        (tmp_path / "work.py").write_text(
            textwrap.dedent(
                """
                def parse(line):
                    return int(line)
                """
            )
        )
        done = shell("execute", "work:parse", cwd=tmp_path, stdin="1\n2\nthree\n4\n")
        assert_one_line_error(done, EXIT_FUNCTION_FAILED, "ValueError on item 2")
        assert done.stdout == ""
        debug = shell("execute", "work:parse", "--debug", cwd=tmp_path, stdin="1\nthree\n")
        assert debug.returncode != 0 and "Traceback" in debug.stderr

    @pytest.mark.timeout(60)
    def test_piped_lines_and_a_file_function(self, tmp_path: Path) -> None:
        (tmp_path / "work.py").write_text("def shout(line):\n    return line.upper()\n")
        done = shell("execute", "work.py:shout", cwd=tmp_path, stdin="a\nb\n")
        assert done.returncode == 0, done.stderr
        assert done.stdout == '"A"\n"B"\n'

    @pytest.mark.slow
    @pytest.mark.timeout(120)
    def test_the_readme_first_command_demo(self, tmp_path: Path) -> None:
        done = shell("demo", cwd=tmp_path, timeout=110)
        assert done.returncode == 0, done.stderr
        for workload in ("tiny", "cpu", "io", "gil-free", "skewed", "stream"):
            assert workload in done.stdout


def test_exit_codes_are_distinct() -> None:
    assert len({0, EXIT_FAILURE, EXIT_USAGE, EXIT_FUNCTION_FAILED}) == 4


def test_docstring_examples() -> None:
    import doctest

    import amorsize.cli
    import amorsize.cli._inputs

    assert doctest.testmod(amorsize.cli._inputs).failed == 0
    assert doctest.testmod(amorsize.cli, optionflags=doctest.ELLIPSIS).failed == 0
