"""Checkpoints: resume without recomputing, identity checks, cleanup, safety, and the seed's manual API.

The SIGKILL test of a real subprocess is in ``test_checkpoint_kill.py``; here runs are interrupted
by an exception, which leaves the same state behind (everything committed before it stays).
"""

from __future__ import annotations

import doctest
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import resilience_funcs as funcs

import amorsize.resilience.checkpoint as checkpoint_module
from amorsize import execute, imap
from amorsize.errors import CheckpointMismatchError, ConfigurationError, ItemError, StoreError
from amorsize.resilience.checkpoint import (
    CheckpointManager,
    CheckpointPolicy,
    CheckpointState,
    get_pending_items,
    merge_results,
)
from amorsize.store import DATABASE_NAME

# Runs here may start worker processes (the planner picks the executor): a deadlock must fail.
pytestmark = pytest.mark.timeout(60)


def test_doctests() -> None:
    assert doctest.testmod(checkpoint_module).failed == 0


def items_of(calls: str, flag: str, bad: int, n: int) -> list[tuple[str, str, int, int]]:
    return [(calls, flag, bad, x) for x in range(n)]


def counts(calls: str) -> dict[int, int]:
    seen: dict[int, int] = {}
    for line in funcs.lines(calls):
        seen[int(line)] = seen.get(int(line), 0) + 1
    return seen


FORCED = {"executor": "serial", "n_jobs": 1, "chunksize": 4}


class TestResume:
    def test_interrupted_run_resumes_without_recomputing(self, calls: str, tmp_path: Path) -> None:
        flag = tmp_path / "flag"
        flag.touch()
        data = items_of(calls, str(flag), 13, 30)
        path = str(tmp_path / "ckpt" / "job.sqlite3")
        with pytest.raises(ItemError, match="item 13"):
            execute(funcs.fail_on_flag, data, checkpoint=path, **FORCED)  # type: ignore[arg-type]
        committed = set(CheckpointManager().load_checkpoint(path).completed_indices)  # type: ignore[union-attr]
        # Chunks 0-3, 4-7, 8-11, and item 12 of the chunk that stopped at the failing item 13.
        assert committed == set(range(13))
        flag.unlink()
        results, report = execute(funcs.fail_on_flag, data, checkpoint=path, return_report=True)
        assert results == [x * x for x in range(30)]
        assert report.items_from_checkpoint == 13 and report.items_from_dry_run == 0
        assert all(counts(calls)[x] == 1 for x in committed)
        assert all(counts(calls)[x] >= 1 for x in range(30))
        assert not Path(path).exists(), "a completed run removes its checkpoint file"

    def test_a_resumed_run_uses_the_recorded_plan_and_makes_no_dry_run(
        self, calls: str, tmp_path: Path
    ) -> None:
        flag = tmp_path / "flag"
        flag.touch()
        data = items_of(calls, str(flag), 200, 300)
        with pytest.raises(ItemError):
            execute(funcs.fail_on_flag, data, checkpoint="planned-job")  # a dry run, then the planned run
        state = CheckpointManager().load_checkpoint("planned-job")
        assert state is not None and state.metadata["plan"]["executor"] in ("serial", "threads", "processes")
        dry_run_done = set(state.completed_indices)
        flag.unlink()
        before = counts(calls)
        results = execute(funcs.fail_on_flag, data, checkpoint="planned-job")
        assert results == [x * x for x in range(300)]
        after = counts(calls)
        assert all(after[x] == before[x] == 1 for x in dry_run_done), "committed items never run again"
        assert "planned-job" not in CheckpointManager().list_checkpoints()

    def test_dry_run_results_are_committed(self, calls: str, tmp_path: Path) -> None:
        flag = tmp_path / "flag"
        flag.touch()
        with pytest.raises(ItemError):
            execute(funcs.fail_on_flag, items_of(calls, str(flag), 3, 10), checkpoint="dry", sample_size=2)
        state = CheckpointManager().load_checkpoint("dry")
        assert state is not None and set(state.completed_indices) >= {0, 1, 2}
        CheckpointManager().delete_checkpoint("dry")

    def test_generator_input_is_verified_as_it_is_consumed(self, calls: str, tmp_path: Path) -> None:
        flag = tmp_path / "flag"
        flag.touch()

        def gen(n: int, changed: int | None = None) -> Iterator[tuple[str, str, int, int]]:
            for x in range(n):
                yield (calls, str(flag), 7, -1 if x == changed else x)

        with pytest.raises(ItemError):
            execute(funcs.fail_on_flag, gen(20), checkpoint="gen", **FORCED)  # type: ignore[arg-type]
        flag.unlink()
        with pytest.raises(CheckpointMismatchError, match=r"item 2 differs .* force_resume=True"):
            execute(funcs.fail_on_flag, gen(20, changed=2), checkpoint="gen", **FORCED)  # type: ignore[arg-type]
        results = execute(funcs.fail_on_flag, gen(20), checkpoint="gen", **FORCED)  # type: ignore[arg-type]
        assert results == [x * x for x in range(20)]
        assert counts(calls)[0] == 1

    def test_imap_resumes_after_the_consumer_stopped(self, calls: str, tmp_path: Path) -> None:
        data = [(calls, x, 0.0) for x in range(40)]
        stream = imap(funcs.slow_square, data, checkpoint="stream", **FORCED)  # type: ignore[arg-type]
        assert [next(stream) for _ in range(10)] == [x * x for x in range(10)]
        stream.close()
        assert "stream" in CheckpointManager().list_checkpoints()
        done_before = set(counts(calls))
        assert list(imap(funcs.slow_square, data, checkpoint="stream", ordered=False, **FORCED)) != []  # type: ignore[arg-type]
        assert all(counts(calls)[x] == 1 for x in done_before)
        assert set(counts(calls)) == set(range(40))

    def test_failed_items_keep_the_checkpoint_and_run_again(self, calls: str, tmp_path: Path) -> None:
        flag = tmp_path / "flag"
        flag.touch()
        data = items_of(calls, str(flag), 5, 12)
        results, report = execute(
            funcs.fail_on_flag, data, checkpoint="partial", on_error="collect", return_report=True, **FORCED
        )
        assert results[5] is None and report.n_failed == 1
        assert "partial" in CheckpointManager().list_checkpoints()
        flag.unlink()
        results = execute(funcs.fail_on_flag, data, checkpoint="partial", **FORCED)  # type: ignore[arg-type]
        assert results == [x * x for x in range(12)]
        assert counts(calls)[5] == 2 and all(counts(calls)[x] == 1 for x in range(12) if x != 5)

    def test_keep_checkpoint(self, calls: str) -> None:
        data = [(calls, x, 0.0) for x in range(5)]
        execute(funcs.slow_square, data, checkpoint="kept", keep_checkpoint=True, **FORCED)  # type: ignore[arg-type]
        state = CheckpointManager().load_checkpoint("kept")
        assert state is not None and sorted(state.completed_indices) == list(range(5))
        assert execute(funcs.slow_square, data, checkpoint="kept", **FORCED) == [x * x for x in range(5)]  # type: ignore[arg-type]
        assert len(funcs.lines(calls)) == 5
        assert CheckpointManager().load_checkpoint("kept") is None


class TestIdentity:
    def make(self, calls: str, name: str) -> list[Any]:
        data = [(calls, x, 0.0) for x in range(6)]
        execute(funcs.slow_square, data, checkpoint=name, keep_checkpoint=True, **FORCED)  # type: ignore[arg-type]
        return data

    def test_another_function_is_refused_unless_forced(self, calls: str) -> None:
        data = self.make(calls, "fn")
        with pytest.raises(CheckpointMismatchError, match="was made by another function"):
            execute(funcs.stamped, data, checkpoint="fn", **FORCED)  # type: ignore[arg-type]
        assert execute(funcs.stamped, data, checkpoint="fn", force_resume=True, **FORCED) == [  # type: ignore[arg-type]
            x * x for x in range(6)
        ]

    def test_a_changed_closure_is_another_function(self, calls: str) -> None:
        data = self.make(calls, "closure")
        factor = 3
        with pytest.raises(CheckpointMismatchError):
            execute(lambda item: item[1] * factor, data, checkpoint="closure", **FORCED)  # type: ignore[arg-type]
        CheckpointManager().delete_checkpoint("closure")

    def test_other_length_is_refused_at_once(self, calls: str) -> None:
        data = self.make(calls, "length")
        with pytest.raises(CheckpointMismatchError, match="was made for 6 items, but this data has 7"):
            execute(funcs.slow_square, [*data, (calls, 6, 0.0)], checkpoint="length", **FORCED)  # type: ignore[arg-type]
        CheckpointManager().delete_checkpoint("length")

    def test_shorter_stream_is_refused_at_its_end(self, calls: str) -> None:
        data = self.make(calls, "short")
        with pytest.raises(CheckpointMismatchError, match="this data ended after 4 items"):
            execute(funcs.slow_square, iter(data[:4]), checkpoint="short", **FORCED)  # type: ignore[arg-type]
        CheckpointManager().delete_checkpoint("short")

    def test_changed_item_is_refused(self, calls: str) -> None:
        data = self.make(calls, "item")
        data[3] = (calls, 99, 0.0)
        with pytest.raises(CheckpointMismatchError, match="item 3 differs"):
            execute(funcs.slow_square, data, checkpoint="item", **FORCED)  # type: ignore[arg-type]
        assert execute(funcs.slow_square, data, checkpoint="item", force_resume=True, **FORCED)[3] == 9  # type: ignore[arg-type]

    def test_bad_names_and_options(self) -> None:
        with pytest.raises(ConfigurationError, match="checkpoint name must be 1-200 letters"):
            execute(abs, [1], checkpoint="no spaces")
        with pytest.raises(ConfigurationError, match="force_resume=True needs a checkpoint="):
            execute(abs, [1], force_resume=True)
        with pytest.raises(ConfigurationError, match="checkpoint must be a name"):
            execute(abs, [1], checkpoint=3)  # type: ignore[arg-type]


class TestSafety:
    def test_refuses_to_unpickle_from_a_file_others_can_write(self, calls: str, tmp_path: Path) -> None:
        path = tmp_path / "job.sqlite3"
        data = [(calls, x, 0.0) for x in range(4)]
        execute(funcs.slow_square, data, checkpoint=path, keep_checkpoint=True, **FORCED)  # type: ignore[arg-type]
        os.chmod(path, 0o664)
        with pytest.raises(StoreError, match="writable by other users"):
            execute(funcs.slow_square, data, checkpoint=path, **FORCED)  # type: ignore[arg-type]

    def test_refuses_a_directory_others_can_write(self, tmp_path: Path) -> None:
        shared = tmp_path / "shared"
        shared.mkdir()
        os.chmod(shared, 0o777)
        with pytest.raises(StoreError, match="another user could replace the database"):
            execute(abs, [1], checkpoint=shared / "job.sqlite3")

    def test_results_are_pickles_in_an_owner_only_file(self, calls: str, tmp_path: Path) -> None:
        path = tmp_path / "new-dir" / "job.sqlite3"
        execute(funcs.slow_square, [(calls, 2, 0.0)], checkpoint=path, keep_checkpoint=True, **FORCED)  # type: ignore[arg-type]
        assert os.stat(path.parent).st_mode & 0o777 == 0o700
        assert os.stat(path).st_mode & 0o777 == 0o600
        with sqlite3.connect(path) as raw:
            assert raw.execute("SELECT count, length(digests) FROM checkpoint_results").fetchall() == [
                (1, 16)
            ]


class TestManualApi:
    def test_versions_history_and_formats(self, state_dir: Path) -> None:
        manager = CheckpointManager(CheckpointPolicy(checkpoint_dir=state_dir, keep_history=1))
        for done in range(1, 5):
            state = CheckpointState(list(range(done)), [i * 2 for i in range(done)], 10, float(done), 4, 10)
            assert manager.save_checkpoint("job", state) == done
        assert manager.load_checkpoint("job").completed_indices == [0, 1, 2, 3]  # type: ignore[union-attr]
        assert manager.load_checkpoint("job", version=3).completed_indices == [0, 1, 2]  # type: ignore[union-attr]
        assert manager.load_checkpoint("job", version=1) is None  # older than keep_history
        assert manager.list_checkpoints() == ["job"]
        assert manager.complete("job") and manager.load_checkpoint("job") is None

    def test_json_format_is_json_in_the_database(self, state_dir: Path) -> None:
        manager = CheckpointManager(CheckpointPolicy(checkpoint_dir=state_dir, save_format="json"))
        manager.save_checkpoint("readable", CheckpointState([0], [{"a": 1}], 2, 0.0, metadata={"phase": 1}))
        with sqlite3.connect(state_dir / DATABASE_NAME) as raw:
            (text,) = raw.execute("SELECT state FROM checkpoint_states").fetchone()
        assert b'"results":[{"a":1}]' in text
        assert manager.load_checkpoint("readable").metadata == {"phase": 1}  # type: ignore[union-attr]
        with pytest.raises(ConfigurationError, match="must be JSON-serialisable with save_format='json'"):
            manager.save_checkpoint("readable", CheckpointState([0], [{1, 2}], 1, 0.0))

    def test_a_runs_checkpoint_loads_as_a_state(self, calls: str) -> None:
        data = [(calls, x, 0.0) for x in range(5)]
        execute(funcs.slow_square, data, checkpoint="as-state", keep_checkpoint=True, **FORCED)  # type: ignore[arg-type]
        manager = CheckpointManager()
        state = manager.load_checkpoint("as-state")
        assert state is not None and (state.total_items, state.chunksize) == (5, 4)
        assert merge_results([], [], state, 5) == [x * x for x in range(5)]
        with pytest.raises(ConfigurationError, match="belongs to a run"):
            manager.save_checkpoint("as-state", state)
        assert manager.delete_checkpoint("as-state") and not manager.delete_checkpoint("as-state")

    def test_a_manual_checkpoint_name_is_not_taken_by_a_run(self, state_dir: Path) -> None:
        CheckpointManager().save_checkpoint("manual-one", CheckpointState([], [], 1, 0.0))
        with pytest.raises(ConfigurationError, match="was saved with CheckpointManager"):
            execute(abs, [1], checkpoint="manual-one")
        CheckpointManager().delete_checkpoint("manual-one")

    def test_seed_loop(self, state_dir: Path) -> None:
        manager = CheckpointManager(CheckpointPolicy(checkpoint_dir=state_dir, checkpoint_interval=3))
        data = list(range(10))
        done: list[int] = []
        results: list[int] = []
        for i, item in enumerate(data[:7]):
            done.append(i)
            results.append(item * item)
            if manager.due(i + 1):
                manager.save_checkpoint("loop", CheckpointState(done.copy(), results.copy(), len(data), 0.0))
        state = manager.load_checkpoint("loop")
        assert state is not None and state.completed_indices == [0, 1, 2, 3, 4, 5]
        pending, items = get_pending_items(data, state)
        assert pending == [6, 7, 8, 9]
        assert merge_results([x * x for x in items], pending, state, len(data)) == [x * x for x in data]

    def test_merge_results_names_the_holes(self) -> None:
        state = CheckpointState([0], ["a"], 3, 0.0)
        with pytest.raises(ConfigurationError, match=r"2 positions have no result \(first: \[1, 2\]\)"):
            merge_results([], [], state, 3)
        with pytest.raises(ConfigurationError, match="one new result per pending index"):
            merge_results(["b"], [], state, 3)
        with pytest.raises(ConfigurationError, match="one result per completed index"):
            CheckpointState([0, 1], ["a"], 3, 0.0)

    def test_policy_checks(self) -> None:
        with pytest.raises(ConfigurationError, match="save_format must be 'pickle' or 'json'"):
            CheckpointPolicy(save_format="yaml")  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="keep_history must be an integer >= 0"):
            CheckpointPolicy(keep_history=-1)
