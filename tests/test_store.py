"""Tests of amorsize.store: round trips, history, permissions, migrations, threads, processes, fork."""

from __future__ import annotations

import doctest
import json
import multiprocessing
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import amorsize.store as store_module
from amorsize.errors import ConfigurationError, StoreError
from amorsize.store import DATABASE_NAME, SCHEMA_VERSION, Store, amorsize_home, default_store

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX owner and mode bits")
fork_only = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh AMORSIZE_HOME that does not exist yet."""
    path = tmp_path / "home"
    monkeypatch.setenv("AMORSIZE_HOME", str(path))
    return path


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "store.sqlite3") as opened:
        yield opened


class TestAmorsizeHome:
    def test_uses_the_environment_variable(self, home: Path) -> None:
        assert amorsize_home() == home
        assert home.is_dir()

    @posix_only
    def test_fresh_home_and_database_are_private_whatever_the_umask(self, home: Path) -> None:
        old = os.umask(0)  # the most permissive umask: only explicit modes keep things private
        try:
            Store().close()
        finally:
            os.umask(old)
        assert _mode(home) == 0o700
        assert _mode(home / DATABASE_NAME) == 0o600

    @posix_only
    def test_accepts_an_existing_home_only_the_owner_can_write(self, home: Path) -> None:
        home.mkdir(mode=0o755)
        os.chmod(home, 0o755)
        assert amorsize_home() == home
        assert _mode(home) == 0o755  # an existing directory is checked, never changed

    @posix_only
    @pytest.mark.parametrize("mode", [0o770, 0o757, 0o777])
    def test_refuses_a_group_or_world_writable_home(self, home: Path, mode: int) -> None:
        home.mkdir()
        os.chmod(home, mode)
        with pytest.raises(StoreError, match=rf"writable by other users \(mode {mode:o}\).*chmod 700"):
            amorsize_home()
        with pytest.raises(StoreError, match="AMORSIZE_HOME"):
            Store()

    @posix_only
    def test_refuses_a_world_writable_database_file(self, tmp_path: Path) -> None:
        path = tmp_path / "db.sqlite3"
        Store(path).close()
        os.chmod(path, 0o666)
        with pytest.raises(StoreError, match=r"database file.*mode 666.*chmod 600"):
            Store(path)

    @pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="chown needs root")
    def test_refuses_a_home_owned_by_another_user(self, home: Path) -> None:
        home.mkdir(mode=0o700)
        os.chown(home, 54321, -1)
        with pytest.raises(StoreError, match="owned by uid 54321"):
            amorsize_home()

    def test_refuses_a_home_that_is_a_file(self, home: Path) -> None:
        home.write_text("not a directory")
        with pytest.raises(StoreError, match="not a directory"):
            amorsize_home()


class TestValues:
    def test_round_trips_json_values(self, store: Store) -> None:
        values = [{"n_jobs": 2, "nested": [1.5, None, True, "x"]}, [1, 2], "text", 3, 2.5, False]
        for i, value in enumerate(values):
            store.put("ns", f"k{i}", value)
        assert [store.get("ns", f"k{i}") for i in range(len(values))] == values

    def test_missing_key_is_none(self, store: Store) -> None:
        assert store.get("ns", "absent") is None

    def test_put_replaces(self, store: Store) -> None:
        store.put("ns", "k", 1)
        store.put("ns", "k", {"v": 2})
        assert store.get("ns", "k") == {"v": 2}
        assert store.items("ns") == [("k", {"v": 2})]

    def test_namespaces_are_separate(self, store: Store) -> None:
        store.put("a", "k", 1)
        store.put("b", "k", 2)
        store.put("b", "j", 3)
        assert store.get("a", "k") == 1
        assert store.items("b") == [("j", 3), ("k", 2)]
        assert store.clear("b") == 2
        assert store.items("b") == []
        assert store.items("a") == [("k", 1)]

    def test_delete_says_whether_there_was_a_value(self, store: Store) -> None:
        store.put("ns", "k", 1)
        assert store.delete("ns", "k") is True
        assert store.delete("ns", "k") is False
        assert store.get("ns", "k") is None

    def test_values_are_stored_as_json_text_never_pickles(self, store: Store) -> None:
        store.put("ns", "k", {"a": [1, 2]})
        with sqlite3.connect(store.path) as raw:
            (text,) = raw.execute("SELECT value FROM kv WHERE namespace = 'ns' AND key = 'k'").fetchone()
        assert json.loads(text) == {"a": [1, 2]}

    def test_refuses_values_that_are_not_json(self, store: Store) -> None:
        with pytest.raises(ConfigurationError, match=r"JSON-serialisable.*got object"):
            store.put("ns", "k", object())
        assert store.get("ns", "k") is None

    def test_persists_across_stores(self, tmp_path: Path) -> None:
        with Store(tmp_path / "s.sqlite3") as first:
            first.put("ns", "k", [1])
        with Store(tmp_path / "s.sqlite3") as second:
            assert second.get("ns", "k") == [1]


class TestRunHistory:
    def test_newest_first_with_columns_and_extras(self, store: Store) -> None:
        first = store.record_run(
            {
                "function_key": "f",
                "function_name": "mod.f",
                "executor": "processes",
                "n_jobs": 2,
                "chunksize": 8,
                "n_items": 100,
                "predicted_seconds": 1.0,
                "measured_seconds": 1.25,
                "breakdown": {"startup": 0.1},
            }
        )
        second = store.record_run({"function_key": "g", "executor": "serial"})
        assert second > first
        runs = store.runs()
        assert [r["id"] for r in runs] == [second, first]
        assert runs[1]["executor"] == "processes"
        assert runs[1]["n_jobs"] == 2
        assert runs[1]["measured_seconds"] == 1.25
        assert runs[1]["breakdown"] == {"startup": 0.1}
        assert runs[0]["n_jobs"] is None
        assert runs[0]["time"] >= runs[1]["time"]

    def test_orders_by_the_recorded_time(self, store: Store) -> None:
        store.record_run({"function_key": "f", "time": 2000.0})
        store.record_run({"function_key": "f", "time": 1000.0})  # recorded later, happened earlier
        store.record_run({"function_key": "f", "time": 3000.0})
        assert [r["time"] for r in store.runs()] == [3000.0, 2000.0, 1000.0]

    def test_limit_and_function_filter(self, store: Store) -> None:
        for i in range(10):
            store.record_run({"function_key": "f" if i % 2 else "g", "n_items": i, "time": 1000.0 + i})
        assert [r["n_items"] for r in store.runs(limit=3)] == [9, 8, 7]
        assert [r["n_items"] for r in store.runs(limit=2, function_key="g")] == [8, 6]
        assert len(store.runs(function_key="f")) == 5
        assert store.runs(function_key="nobody") == []

    @pytest.mark.parametrize("limit", [0, -1, True])
    def test_rejects_a_bad_limit(self, store: Store, limit: int) -> None:
        with pytest.raises(ConfigurationError, match="limit must be an integer >= 1"):
            store.runs(limit=limit)

    def test_rejects_a_bad_time(self, store: Store) -> None:
        with pytest.raises(ConfigurationError, match="seconds since the epoch"):
            store.record_run({"time": "yesterday"})

    def test_keeps_only_the_newest_runs(self, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(store_module, "MAX_RUNS", 5)
        ids = [store.record_run({"n_items": i}) for i in range(8)]
        assert [r["id"] for r in store.runs(limit=50)] == ids[::-1][:5]


class TestSchema:
    def test_new_database_has_the_current_schema_in_wal_mode(self, store: Store) -> None:
        with sqlite3.connect(store.path) as raw:
            assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
            assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    def test_migrates_forward_keeping_data(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        path = tmp_path / "s.sqlite3"
        with Store(path) as old:
            old.put("ns", "k", 1)
        step = ("CREATE TABLE dead_letters (id INTEGER PRIMARY KEY, payload TEXT)",)
        monkeypatch.setattr(store_module, "_MIGRATIONS", (*store_module._MIGRATIONS, step))
        monkeypatch.setattr(store_module, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
        with Store(path) as new:
            assert new.get("ns", "k") == 1
            with new.transaction() as conn:
                conn.execute("INSERT INTO dead_letters (payload) VALUES ('x')")
        with sqlite3.connect(path) as raw:
            assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1

    def test_refuses_a_database_from_a_newer_amorsize(self, tmp_path: Path) -> None:
        path = tmp_path / "s.sqlite3"
        Store(path).close()
        with sqlite3.connect(path) as raw:
            raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
        with pytest.raises(StoreError, match="newer than this Amorsize"):
            Store(path)

    def test_a_damaged_file_is_a_store_error(self, tmp_path: Path) -> None:
        path = tmp_path / "s.sqlite3"
        path.write_bytes(b"this is not an SQLite database, just text " * 100)
        os.chmod(path, 0o600)
        with pytest.raises(StoreError, match="damaged"):
            Store(path)

    def test_transaction_rolls_back_on_error(self, store: Store) -> None:
        with pytest.raises(RuntimeError), store.transaction() as conn:
            conn.execute("INSERT INTO kv VALUES ('ns', 'k', '1', 0)")
            raise RuntimeError("boom")
        assert store.get("ns", "k") is None

    def test_closed_store_refuses_use(self, tmp_path: Path) -> None:
        opened = Store(tmp_path / "s.sqlite3")
        opened.close()
        opened.close()  # idempotent
        assert opened.closed
        with pytest.raises(StoreError, match="closed"):
            opened.get("ns", "k")


def _write_many(path: str, worker: int, n: int, barrier: threading.Barrier) -> None:
    barrier.wait()  # all processes open the (new) database and write at the same moment
    with Store(path) as own:
        for i in range(n):
            own.put(f"p{worker}", str(i), {"worker": worker, "i": i})
            if i % 4 == 0:
                own.record_run({"function_key": f"w{worker}", "n_items": i})


class TestConcurrency:
    def test_threads_share_one_store(self, store: Store) -> None:
        def write(t: int) -> None:
            for i in range(50):
                store.put("threads", f"{t}-{i}", i)
                store.get("threads", f"{t}-{i}")

        threads = [threading.Thread(target=write, args=(t,)) for t in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(store.items("threads")) == 300

    @pytest.mark.timeout(60)
    def test_processes_write_at_once_without_losing_writes(self, tmp_path: Path) -> None:
        n_procs, n_writes = 4, 200
        path = tmp_path / "shared.sqlite3"  # not created yet: the processes race to create it
        ctx = multiprocessing.get_context()
        barrier = ctx.Barrier(n_procs)
        procs = [
            ctx.Process(target=_write_many, args=(str(path), w, n_writes, barrier)) for w in range(n_procs)
        ]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(50)
        assert [proc.exitcode for proc in procs] == [0] * n_procs
        with Store(path) as check:
            for w in range(n_procs):
                assert check.items(f"p{w}") == sorted(
                    (str(i), {"worker": w, "i": i}) for i in range(n_writes)
                )
            assert len(check.runs(limit=1000)) == n_procs * n_writes // 4


def _child_uses(store: Store) -> int:
    """Run in a forked child: use the inherited Store, return an exit code."""
    try:
        assert store.get("ns", "parent") == "written before the fork"
        store.put("ns", "child", os.getpid())
        store.record_run({"function_key": "child"})
        return 0
    except BaseException:
        return 1


@contextmanager
def _busy_in_another_thread(store: Store) -> Iterator[None]:
    """Hold ``store`` in a transaction on another thread while the block runs."""
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with store.transaction():
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(10)
    try:
        yield
    finally:
        release.set()
        holder.join()


@fork_only
class TestFork:
    @pytest.mark.timeout(30)
    def test_child_reopens_and_parent_keeps_working(self, store: Store) -> None:
        store.put("ns", "parent", "written before the fork")
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            os._exit(_child_uses(store))
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert store.get("ns", "child") == pid  # the parent's connection still works
        store.put("ns", "parent-after", 1)
        assert store.runs()[0]["function_key"] == "child"

    @pytest.mark.timeout(30)
    def test_child_keeps_its_writes_when_the_parent_closes(self, store: Store) -> None:
        # SQLite's per-process lock state must not reach the child: with an inherited connection the
        # parent's close deleted the WAL under the child and its later writes were lost (0 of 50).
        store.put("ns", "parent", "written before the fork")
        to_child, from_parent = os.pipe()
        to_parent, from_child = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = _child_uses(store)
            os.write(from_child, b"1")
            os.read(to_child, 1)  # the parent has closed its connection
            for i in range(50):
                store.put("late", str(i), i)
            os._exit(code)
        os.read(to_parent, 1)
        store.close()
        os.write(from_parent, b"1")
        _, status = os.waitpid(pid, 0)
        for fd in (to_child, from_parent, to_parent, from_child):
            os.close(fd)
        assert os.waitstatus_to_exitcode(status) == 0
        with Store(store.path) as check:
            assert len(check.items("late")) == 50
            assert check.get("ns", "child") == pid

    @pytest.mark.timeout(30)
    def test_store_used_by_a_thread_during_fork(self, store: Store) -> None:
        # A thread holds the store's lock while the main thread forks: the child must not deadlock.
        store.put("ns", "parent", "written before the fork")
        with _busy_in_another_thread(store):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child
                try:
                    os._exit(0 if store.get("ns", "parent") == "written before the fork" else 1)
                finally:
                    os._exit(2)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0


class TestDeferredWrites:
    def test_read_back_at_once_in_this_process(self, store: Store) -> None:
        before = store.last_run_id()
        store.record_run_later({"function_key": "f", "n_items": 3}, lambda: {"machine": "m"})
        assert store.last_run_id() == before + 1  # the read waits for the queued write
        run = store.runs(limit=1)[0]
        assert (run["function_key"], run["n_items"], run["machine"]) == ("f", 3, "m")

    def test_kept_in_order_and_timed_when_queued(self, store: Store) -> None:
        queued = time.time()
        for i in range(5):
            store.record_run_later({"n_items": i})
        assert store_module.flush_deferred(timeout=10)
        runs = store.runs()
        assert [r["n_items"] for r in runs] == [4, 3, 2, 1, 0]
        assert all(queued <= r["time"] <= time.time() for r in runs)

    def test_close_writes_what_is_queued(self, tmp_path: Path) -> None:
        path = tmp_path / "s.sqlite3"
        closing = Store(path)
        closing.record_run_later({"function_key": "last words"})
        closing.close()
        with Store(path) as check:
            assert [r["function_key"] for r in check.runs()] == ["last words"]

    def test_a_failed_write_is_a_warning_not_an_error(self, store: Store) -> None:
        store.record_run_later({"time": float("nan")})  # refused by record_run, in the writer thread
        with pytest.warns(RuntimeWarning, match="could not write to its store.*seconds since the epoch"):
            assert store_module.flush_deferred(timeout=10)
            time.sleep(0.05)  # the warning is issued just after the write gave up
        store.record_run_later({"n_items": 1})  # the writer goes on
        assert [r["n_items"] for r in store.runs()] == [1]

    @pytest.mark.timeout(30)
    def test_the_writer_goes_on_after_any_exception(self, store: Store) -> None:
        def leave() -> None:
            raise SystemExit  # not an Exception: it would end the writer thread, silently

        store_module._DEFERRED.submit(leave)
        with pytest.warns(RuntimeWarning, match="SystemExit"):
            assert store_module.flush_deferred(timeout=10)
            time.sleep(0.05)
        store.record_run_later({"n_items": 7})
        assert [r["n_items"] for r in store.runs()] == [7]

    def test_a_read_inside_an_operation_does_not_wait_for_the_writer(self, store: Store) -> None:
        # the writer needs the store's lock, which this thread holds: waiting for it would deadlock
        with store.transaction():
            store.record_run_later({"n_items": 1})
            assert store.runs() == []
        assert [r["n_items"] for r in store.runs()] == [1]

    def test_a_transaction_sees_the_queued_writes_and_its_deletes_last(self, store: Store) -> None:
        slow = lambda: time.sleep(0.2) or {}  # noqa: E731 - still queued when the transaction begins
        store.record_run_later({"n_items": 1}, slow)
        with store.transaction() as conn:
            assert conn.execute("SELECT n_items FROM runs").fetchall() == [(1,)]
        store.record_run_later({"n_items": 2}, slow)
        with store.transaction() as conn:  # as `amorsize store clear --history` does
            conn.execute("DELETE FROM runs")
        assert store_module.flush_deferred(timeout=10)
        assert store.runs() == []

    def test_a_record_run_comes_after_the_queued_ones(self, store: Store) -> None:
        store.record_run_later({"n_items": 1}, lambda: time.sleep(0.2) or {})
        store.record_run({"n_items": 2})
        assert [(r["n_items"], r["id"]) for r in store.runs()] == [(2, 2), (1, 1)]

    @pytest.mark.timeout(30)
    def test_inside_one_stores_operation_another_store_does_not_wait(
        self, store: Store, tmp_path: Path
    ) -> None:
        # the writer waits for `store`, which this thread holds: waiting for the writer would deadlock
        with Store(tmp_path / "other.sqlite3") as other, store.transaction():
            store.record_run_later({"n_items": 1})
            assert other.runs() == [] and other.last_run_id() == 0
        assert [r["n_items"] for r in store.runs()] == [1]

    @pytest.mark.timeout(60)
    def test_written_at_exit(self, tmp_path: Path, fresh_python: Callable[..., str]) -> None:
        path = tmp_path / "s.sqlite3"
        fresh_python(
            f"""
            import time
            from amorsize.store import Store
            store = Store({str(path)!r})
            store.record_run_later({{"function_key": "at exit"}}, lambda: time.sleep(0.3) or {{}})
            """
        )
        with Store(path) as check:
            assert [r["function_key"] for r in check.runs()] == ["at exit"]

    @fork_only
    @pytest.mark.timeout(30)
    def test_a_fork_waits_for_the_write_and_the_child_never_repeats_it(
        self, store: Store, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        store.record_run_later({"function_key": "before"}, lambda: time.sleep(0.2) or {})
        pid = os.fork()  # waits for the write (the store must be idle to close before the fork)
        if pid == 0:  # pragma: no cover - the child
            os._exit(0 if store_module.flush_deferred(timeout=5) and len(store.runs()) == 1 else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        # a write still blocked when the wait gives up stays the parent's: the child has none queued
        monkeypatch.setattr(store_module, "FORK_WAIT", 0.1)
        with _busy_in_another_thread(store):
            store.record_run_later({"function_key": "blocked"})
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child
                os._exit(0 if store_module.flush_deferred(timeout=0) else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert [r["function_key"] for r in store.runs()] == ["blocked", "before"]


class TestDefaultStore:
    def test_one_store_per_process_and_home(self, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        first = default_store()
        assert default_store() is first
        assert first.path == home / DATABASE_NAME
        monkeypatch.setenv("AMORSIZE_HOME", str(home.parent / "other"))
        second = default_store()
        assert second is not first
        assert second.path == home.parent / "other" / DATABASE_NAME

    def test_reopened_after_close(self, home: Path) -> None:
        first = default_store()
        first.close()
        second = default_store()
        assert second is not first
        second.put("ns", "k", 1)

    @fork_only
    @pytest.mark.timeout(30)
    def test_works_in_a_forked_child(self, home: Path) -> None:
        default_store().put("ns", "parent", "written before the fork")
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            os._exit(_child_uses(default_store()))
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert default_store().get("ns", "child") == pid


class TestDocstrings:
    def test_examples_run(self) -> None:
        result = doctest.testmod(store_module, verbose=False)
        assert result.attempted >= 2
        assert result.failed == 0
