"""Dead-letter queue: the seed's methods, persistence, limits, JSON export, concurrency, replay, execute."""

from __future__ import annotations

import doctest
import json
import multiprocessing
import os
import sqlite3
import stat
import threading
from pathlib import Path

import pytest
import resilience_funcs as funcs

import amorsize.resilience.dlq as dlq_module
from amorsize import execute, imap
from amorsize.errors import ConfigurationError, StoreError
from amorsize.resilience.dlq import (
    DeadLetterEntry,
    DeadLetterQueue,
    DLQFormat,
    DLQPolicy,
    DLQSummary,
    replay_failed_items,
)
from amorsize.store import DATABASE_NAME

# Runs here may start worker processes (the planner picks the executor): a deadlock must fail.
pytestmark = pytest.mark.timeout(60)


def test_doctests() -> None:
    assert doctest.testmod(dlq_module).failed == 0


def queue(directory: Path, **policy: object) -> DeadLetterQueue:
    return DeadLetterQueue(DLQPolicy(directory=directory, **policy))  # type: ignore[arg-type]


class TestSeedMethods:
    def test_add_entries_summary_size_clear(self, state_dir: Path) -> None:
        dlq = queue(state_dir)
        try:
            raise ValueError("bad record 1")
        except ValueError as error:
            entry = dlq.add({"id": 1}, error, retry_count=3, metadata={"source": "batch"})
        dlq.add({"id": 2}, KeyError("missing"))
        assert isinstance(entry, DeadLetterEntry) and entry.id is not None
        entries = dlq.get_entries()
        assert [e.item for e in entries] == [{"id": 1}, {"id": 2}]
        first = entries[0]
        assert (first.error_type, first.error_message, first.retry_count) == ("ValueError", "bad record 1", 3)
        assert "raise ValueError" in first.traceback and first.metadata == {"source": "batch"}
        assert first.timestamp > 0
        summary = dlq.get_summary()
        assert isinstance(summary, DLQSummary)
        assert summary["total_entries"] == 2 and summary.error_types == {"ValueError": 1, "KeyError": 1}
        assert summary["avg_retry_count"] == 1.5
        assert dlq.size() == 2
        assert dlq.clear() == 2 and dlq.size() == 0

    def test_persisted_across_instances_and_load(self, state_dir: Path) -> None:
        queue(state_dir).add("x", RuntimeError("boom"))
        again = queue(state_dir)
        assert again.load() == 1 and again.size() == 1
        assert again.get_entries()[0].item == "x"

    def test_auto_persist_off_keeps_entries_until_persist(self, state_dir: Path) -> None:
        dlq = queue(state_dir, auto_persist=False)
        dlq.add(1, RuntimeError("a"))
        assert dlq.size() == 1 and queue(state_dir).size() == 0
        assert dlq.persist() == 1
        assert queue(state_dir).size() == 1 and dlq.size() == 1

    def test_max_entries_drops_the_oldest(self, state_dir: Path) -> None:
        dlq = queue(state_dir, max_entries=3)
        for item in range(5):
            dlq.add(item, RuntimeError(str(item)))
        assert [e.item for e in dlq.get_entries()] == [2, 3, 4]

    def test_queues_are_separate_by_name(self, state_dir: Path) -> None:
        a = DeadLetterQueue(DLQPolicy(directory=state_dir), name="a")
        b = DeadLetterQueue(DLQPolicy(directory=state_dir), name="b")
        a.add(1, RuntimeError())
        assert (a.size(), b.size()) == (1, 0)

    def test_without_traceback(self, state_dir: Path) -> None:
        dlq = queue(state_dir, include_traceback=False)
        try:
            raise OSError("disk")
        except OSError as error:
            dlq.add(1, error)
        assert dlq.get_entries()[0].traceback == ""

    def test_json_format_is_readable_in_the_database(self, state_dir: Path) -> None:
        dlq = queue(state_dir, format=DLQFormat.JSON)
        dlq.add({"id": 5}, RuntimeError("x"))
        dlq.add({1, 2}, RuntimeError("a set is not JSON"))  # pickled instead: nothing is lost
        with sqlite3.connect(state_dir / DATABASE_NAME) as raw:
            rows = raw.execute("SELECT item_format, item FROM dlq_entries ORDER BY id").fetchall()
        assert rows[0] == ("json", b'{"id": 5}') and rows[1][0] == "pickle"
        assert [e.item for e in dlq.get_entries()] == [{"id": 5}, {1, 2}]

    def test_unpicklable_item_is_kept_as_repr_and_not_replayed(self, state_dir: Path) -> None:
        dlq = queue(state_dir)
        dlq.add(threading.Lock(), RuntimeError("x"))
        (entry,) = dlq.get_entries()
        assert not entry.replayable and "lock" in entry.item
        recovered, still = replay_failed_items(dlq, lambda item: item)
        assert recovered == [] and still == [entry]

    def test_bad_policy_and_name(self, state_dir: Path) -> None:
        with pytest.raises(ConfigurationError, match="max_entries must be an integer >= 0"):
            DLQPolicy(max_entries=-1)
        with pytest.raises(ConfigurationError, match=r"format must be DLQFormat\.JSON or DLQFormat\.PICKLE"):
            DLQPolicy(format="xml")  # type: ignore[arg-type]
        assert DLQPolicy(format="json").format is DLQFormat.JSON  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="dead-letter queue name must be"):
            DeadLetterQueue(name="no spaces please")


class TestJson:
    def test_export_then_import(self, state_dir: Path, tmp_path: Path) -> None:
        dlq = queue(state_dir)
        dlq.add({"id": 1}, ValueError("v"), retry_count=2, metadata={"k": 1})
        dlq.add(object(), ValueError("not JSON"))
        target = tmp_path / "dead.json"
        assert dlq.export_json(target) == 2
        assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
        document = json.loads(target.read_text())
        assert document["entries"][0]["item"] == {"id": 1} and "item" not in document["entries"][1]
        other = DeadLetterQueue(DLQPolicy(directory=state_dir), name="imported")
        with pytest.warns(UserWarning, match="1 entries .* have no JSON item"):
            assert other.import_json(target) == 1
        (entry,) = other.get_entries()
        assert (entry.item, entry.error_type, entry.retry_count, entry.metadata) == (
            {"id": 1},
            "ValueError",
            2,
            {"k": 1},
        )

    def test_import_refuses_other_files(self, tmp_path: Path, state_dir: Path) -> None:
        bad = tmp_path / "bad.json"
        bad.write_text("[1, 2]")
        with pytest.raises(ConfigurationError, match="is not a dead-letter export"):
            queue(state_dir).import_json(bad)


def _add_many(directory: str, worker: int, n: int, max_entries: int) -> None:
    dlq = DeadLetterQueue(DLQPolicy(directory=directory, max_entries=max_entries))
    for i in range(n):
        dlq.add((worker, i), RuntimeError(f"{worker}/{i}"))


@pytest.mark.timeout(60)
class TestConcurrency:
    @pytest.mark.parametrize("max_entries", [0, 120])
    def test_processes_add_at_once(self, state_dir: Path, max_entries: int) -> None:
        context = multiprocessing.get_context("fork")
        workers = [
            context.Process(target=_add_many, args=(str(state_dir), w, 50, max_entries)) for w in range(4)
        ]
        for process in workers:
            process.start()
        for process in workers:
            process.join(30)
            assert process.exitcode == 0
        entries = queue(state_dir, max_entries=max_entries).get_entries()
        assert len(entries) == (200 if max_entries == 0 else 120)
        assert len({e.id for e in entries}) == len(entries)
        if max_entries == 0:
            assert sorted(e.item for e in entries) == sorted((w, i) for w in range(4) for i in range(50))


class TestReplay:
    def test_recovered_removed_and_still_failing_updated(self, state_dir: Path) -> None:
        dlq = queue(state_dir)
        for item in (1, -2, 3):
            dlq.add(item, ValueError("first failure"), retry_count=1)

        def fixed(x: int) -> int:
            if x < 0:
                raise ArithmeticError("still negative")
            return x * 100

        recovered, still = replay_failed_items(dlq, fixed)
        assert recovered == [100, 300]
        assert [(e.item, e.error_type, e.retry_count) for e in still] == [(-2, "ArithmeticError", 2)]
        (left,) = dlq.get_entries()
        assert (left.item, left.error_type, left.error_message, left.retry_count) == (
            -2,
            "ArithmeticError",
            "still negative",
            2,
        )


class TestExecute:
    def test_failed_items_go_to_the_default_queue_with_their_details(self, calls: str) -> None:
        default = DeadLetterQueue()
        default.clear()
        results = execute(
            funcs.bad_when_negative, [(calls, x) for x in (1, -1, 2, -2)], on_error="dlq", placeholder="x"
        )
        assert results == [2, "x", 3, "x"]
        entries = default.get_entries()
        assert [(e.item[1], e.metadata["index"], e.error_type) for e in entries] == [
            (-1, 1, "BadRecord"),
            (-2, 3, "BadRecord"),
        ]
        assert all(e.metadata["function"] == "resilience_funcs.bad_when_negative" for e in entries)
        recovered, _ = replay_failed_items(default, lambda item: abs(item[1]))
        assert recovered == [1, 2] and default.size() == 0

    @pytest.mark.timeout(60)
    def test_process_workers_and_imap(self, calls: str, state_dir: Path) -> None:
        dlq = queue(state_dir)
        items = [(calls, x) for x in range(-5, 15)]
        out = list(
            imap(
                funcs.bad_when_negative,
                iter(items),
                executor="processes",
                n_jobs=2,
                chunksize=3,
                on_error="dlq",
                dlq=dlq,
            )
        )
        assert out == [None] * 5 + [x + 1 for x in range(15)]
        assert sorted(e.metadata["index"] for e in dlq.get_entries()) == [0, 1, 2, 3, 4]
        assert all(e.traceback and "BadRecord" in e.traceback for e in dlq.get_entries())

    def test_dlq_needs_on_error_dlq(self, state_dir: Path) -> None:
        with pytest.raises(ConfigurationError, match="dlq= is used only with on_error='dlq'"):
            execute(abs, [1], dlq=queue(state_dir))
        with pytest.raises(ConfigurationError, match="on_error must be 'raise', 'collect' or 'dlq'"):
            execute(abs, [1], on_error="ignore")  # type: ignore[arg-type]


class TestSafety:
    def test_refuses_a_database_others_can_write(self, state_dir: Path) -> None:
        dlq = queue(state_dir)
        dlq.add(1, RuntimeError())
        os.chmod(state_dir / DATABASE_NAME, 0o666)
        with pytest.raises(StoreError, match="writable by other users"):
            dlq.get_entries()

    def test_refuses_a_directory_others_can_write(self, tmp_path: Path) -> None:
        shared = tmp_path / "shared"
        shared.mkdir()
        os.chmod(shared, 0o777)
        with pytest.raises(StoreError, match="another user could replace the database"):
            queue(shared).add(1, RuntimeError())

    def test_created_directories_are_private(self, tmp_path: Path) -> None:
        target = tmp_path / "new" / "dlq"
        queue(target).add(1, RuntimeError())
        assert stat.S_IMODE(os.stat(target).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(target / DATABASE_NAME).st_mode) == 0o600
