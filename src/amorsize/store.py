"""The one embedded SQLite store: calibration, cached plans, run history, checkpoints, dead letters.

One database file per user, in a private directory (``$AMORSIZE_HOME``, else the platform's user data
directory). Calibration, plans and history are JSON text and numbers. Checkpointed results and
dead-lettered items are pickles (:mod:`amorsize.resilience`): they are read back only after the file
and its directory are checked to be the user's own and writable by no one else, so no other user can
plant one. Several threads and processes may use it at once::

    thread A ─┐                      ┌─ process 2 (its own Store, its own connection)
    thread B ─┼─► Store ── lock ──► one sqlite3 connection ──► amorsize.sqlite3 (WAL) ◄─┘
    thread C ─┘                                                    ▲
                                                                   │ each write: BEGIN IMMEDIATE … COMMIT,
                                                                   │ waiting up to BUSY_TIMEOUT for the
                                                                   │ other writers

Fork: SQLite keeps per-process lock state, and a child that inherits it can lose its writes (its WAL
is deleted under it when the parent closes). So just before a fork every *idle* connection is closed;
parent and child each reopen on next use. A connection busy in another thread at that instant cannot
be closed: the child then sets it aside (never used, not closed while it runs) and opens its own —
the one case SQLite cannot make fully safe, so avoid forking while another thread writes the store.
Amorsize's own background writes (a run's history row, :meth:`Store.record_run_later`) are waited
for before a fork, up to :data:`FORK_WAIT`.

Example:
    >>> import pathlib, tempfile
    >>> with tempfile.TemporaryDirectory() as tmp, Store(pathlib.Path(tmp) / "demo.sqlite3") as store:
    ...     store.put("plans", "f", {"n_jobs": 2, "chunksize": 16})
    ...     store.get("plans", "f")
    {'n_jobs': 2, 'chunksize': 16}
"""

from __future__ import annotations

import atexit
import contextlib
import json
import math
import os
import sqlite3
import stat
import threading
import time
import warnings
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import platformdirs

from amorsize._closing import ClosingContext
from amorsize.errors import ConfigurationError, StoreError

__all__ = [
    "BUSY_TIMEOUT",
    "DATABASE_NAME",
    "MAX_RUNS",
    "RUN_COLUMNS",
    "SCHEMA_VERSION",
    "Store",
    "amorsize_home",
    "default_store",
    "flush_deferred",
]

#: File name of the database inside the Amorsize home.
DATABASE_NAME = "amorsize.sqlite3"

#: Seconds a write waits for other writers before failing. Every write here is one small row
#: (well under a millisecond, tests/test_store.py writes hundreds per second from 4 processes), so
#: 10 s only runs out when another process holds the database stuck, e.g. stopped in a debugger.
BUSY_TIMEOUT = 10.0

#: Run-history rows kept; older rows are deleted as new ones arrive. At ~300 bytes a row this caps
#: the history near 3 MB, and the model correction only ever looks at recent runs of one function.
MAX_RUNS = 10_000

#: The run-history columns of :meth:`Store.record_run`, in table order (after ``id``); any other key
#: of a record goes to a JSON column and comes back from :meth:`Store.runs` merged in.
RUN_COLUMNS: tuple[str, ...] = (
    "time",
    "function_key",
    "function_name",
    "executor",
    "n_jobs",
    "chunksize",
    "n_items",
    "predicted_seconds",
    "measured_seconds",
)

#: Forward migrations: ``_MIGRATIONS[v]`` takes a database from schema ``v`` to ``v + 1``. Append
#: a new tuple to add tables (checkpoints, dead letters); never edit a released one.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """
        CREATE TABLE kv (
            namespace TEXT NOT NULL,
            key       TEXT NOT NULL,
            value     TEXT NOT NULL,
            updated   REAL NOT NULL,
            PRIMARY KEY (namespace, key)
        ) WITHOUT ROWID
        """,
        """
        CREATE TABLE runs (
            id                INTEGER PRIMARY KEY AUTOINCREMENT,
            time              REAL NOT NULL,
            function_key      TEXT,
            function_name     TEXT,
            executor          TEXT,
            n_jobs            INTEGER,
            chunksize         INTEGER,
            n_items           INTEGER,
            predicted_seconds REAL,
            measured_seconds  REAL,
            extra             TEXT NOT NULL DEFAULT '{}'
        )
        """,
        "CREATE INDEX runs_by_time ON runs (time, id)",
        "CREATE INDEX runs_by_function ON runs (function_key, time, id)",
    ),
    (  # amorsize.resilience: checkpoints (of runs and of CheckpointManager) and dead letters
        """
        CREATE TABLE checkpoints (
            name          TEXT PRIMARY KEY,
            kind          TEXT NOT NULL,
            created       REAL NOT NULL,
            updated       REAL NOT NULL,
            function_key  TEXT,
            function_name TEXT,
            n_items       INTEGER,
            info          TEXT NOT NULL DEFAULT '{}'
        )
        """,
        """
        CREATE TABLE checkpoint_results (
            name    TEXT NOT NULL,
            start   INTEGER NOT NULL,
            count   INTEGER NOT NULL,
            digests BLOB NOT NULL,
            results BLOB NOT NULL,
            PRIMARY KEY (name, start)
        )
        """,
        """
        CREATE TABLE checkpoint_states (
            name    TEXT NOT NULL,
            version INTEGER NOT NULL,
            time    REAL NOT NULL,
            format  TEXT NOT NULL,
            state   BLOB NOT NULL,
            PRIMARY KEY (name, version)
        )
        """,
        """
        CREATE TABLE dlq_entries (
            id            INTEGER PRIMARY KEY AUTOINCREMENT,
            queue         TEXT NOT NULL,
            time          REAL NOT NULL,
            item_format   TEXT NOT NULL,
            item          BLOB,
            error_type    TEXT NOT NULL,
            error_message TEXT NOT NULL,
            traceback     TEXT NOT NULL,
            retry_count   INTEGER NOT NULL,
            metadata      TEXT NOT NULL DEFAULT '{}'
        )
        """,
        "CREATE INDEX dlq_entries_by_queue ON dlq_entries (queue, id)",
    ),
)

#: The schema this code writes (``PRAGMA user_version``).
SCHEMA_VERSION = len(_MIGRATIONS)

_GROUP_OR_WORLD_WRITABLE = stat.S_IWGRP | stat.S_IWOTH

# Connections that were busy in another thread of the parent at a fork, inherited by the child.
# SQLite forbids using them in the child, and closing one there could release locks the child holds
# through its own connection, so the child keeps them referenced (never closed) and opens its own.
_INHERITED_CONNECTIONS: list[sqlite3.Connection] = []

# Stores whose lock the forking thread holds across a fork (taken in the before-fork hook).
_HELD_ACROSS_FORK: list[Store] = []


#: Pause between attempts to switch a new database to WAL while another process holds it.
WAL_RETRY_SECONDS = 0.01


def _set_wal(conn: sqlite3.Connection, *, deadline: float = BUSY_TIMEOUT) -> None:
    """Switch to WAL, retrying while another process holds the database.

    SQLite answers "database is locked" to a journal-mode change at once, without its busy handler,
    when several processes open a new database together (seen in CI with 4 processes racing to
    create one); every other statement waits ``BUSY_TIMEOUT`` by itself.
    """
    give_up = time.monotonic() + deadline
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() >= give_up:
                raise
            time.sleep(WAL_RETRY_SECONDS)


def _can_check_owner() -> bool:
    return os.name == "posix" and hasattr(os, "getuid")


def _check_private(path: Path, what: str, fix_mode: str) -> None:
    """Refuse a path another user owns or may write to.

    Args:
        path: an existing directory or file.
        what: how to name it in the error ("directory", "database file").
        fix_mode: the chmod mode that fixes it ("700", "600").

    Raises:
        StoreError: the path is owned by someone else or is group/world-writable.
    """
    if not _can_check_owner():
        return  # Windows: per-user profile ACLs protect the default location
    try:
        info = os.stat(path)
    except OSError as exc:
        raise StoreError(f"cannot inspect the Amorsize {what} {path}: {exc}") from exc
    problems = []
    uid = os.getuid()
    if info.st_uid != uid:
        problems.append(f"owned by uid {info.st_uid}, not by you (uid {uid})")
    if info.st_mode & _GROUP_OR_WORLD_WRITABLE:
        problems.append(f"writable by other users (mode {stat.S_IMODE(info.st_mode):o})")
    if problems:
        raise StoreError(
            f"refusing to use the Amorsize {what} {path}: it is {' and '.join(problems)}; "
            f"fix it with `chmod {fix_mode} {path}` (and chown it to yourself), "
            "or set AMORSIZE_HOME to a private directory of your own"
        )


def _ensure_private_dir(path: Path) -> None:
    """Create ``path`` with mode 0o700 if it is missing, then check it is private.

    Raises:
        StoreError: it cannot be created, is not a directory, or is not private.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(path, 0o700)
    except FileExistsError:
        if not path.is_dir():
            raise StoreError(
                f"the Amorsize home {path} exists but is not a directory; "
                "remove it or set AMORSIZE_HOME to a directory"
            ) from None
    except OSError as exc:
        raise StoreError(
            f"cannot create the Amorsize home {path}: {exc}; set AMORSIZE_HOME to a writable directory"
        ) from exc
    else:
        os.chmod(path, 0o700)  # the umask may have removed bits from mkdir's mode, never added: be exact
    _check_private(path, "directory", "700")


def _ensure_private_file(path: Path) -> None:
    """Create an empty database file with mode 0o600 if it is missing, then check it is private.

    Raises:
        StoreError: it cannot be created or is not private.
    """
    try:
        if not path.parent.exists():
            _ensure_private_dir(path.parent)
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise StoreError(f"cannot create the Amorsize database {path}: {exc}") from exc
    else:
        try:
            if hasattr(os, "fchmod"):
                os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
    _check_private(path, "database file", "600")


def amorsize_home() -> Path:
    """The private directory that holds Amorsize's store, created (mode 0o700) if missing.

    ``$AMORSIZE_HOME`` when set, else ``platformdirs.user_data_dir("amorsize")``.

    Returns:
        The directory's path.

    Raises:
        StoreError: the directory cannot be created, or it exists but another user owns it or may
            write to it.
    """
    env = os.environ.get("AMORSIZE_HOME")
    home = Path(env).expanduser() if env else Path(platformdirs.user_data_dir("amorsize"))
    _ensure_private_dir(home)
    return home


def _dumps(value: Any, what: str) -> str:
    try:
        return json.dumps(value, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"{what} must be JSON-serialisable (dicts, lists, strings, numbers, booleans, None); "
            f"got {type(value).__name__}: {exc}"
        ) from exc


@contextmanager
def _translated(path: Path) -> Iterator[None]:
    """Turn sqlite3 errors into StoreError with a cause and a fix."""
    try:
        yield
    except sqlite3.Error as exc:
        text = str(exc)
        if "locked" in text or "busy" in text:
            hint = f"another process held it for more than {BUSY_TIMEOUT:g} s; retry, or find that process"
        elif "not a database" in text or "malformed" in text or "corrupt" in text:
            hint = "the file is damaged; delete it (it only holds caches and history) or set AMORSIZE_HOME"
        else:
            hint = "check the file and its directory, or set AMORSIZE_HOME to another directory"
        raise StoreError(f"the Amorsize store {path} failed: {text}; {hint}") from exc


#: Seconds a fork waits for a deferred write in progress (see :class:`_Deferred`): one history row
#: takes 1–3 ms; longer only while another process holds the database.
FORK_WAIT = 1.0

#: Seconds the interpreter's exit waits for the deferred writes still queued.
EXIT_WAIT = 10.0


class _Deferred:
    """Store writes the caller need not wait for, made in order by one daemon thread.

    A run's history row costs 1–3 ms to write (more while the WAL is checkpointed), after the run's
    last result: on a 10 ms job that is a fifth of its time. :meth:`Store.record_run_later` queues it
    here instead. Queued writes are done before any later operation of this process that could
    see the run history (:meth:`Store.runs`, :meth:`Store.transaction`…, through :meth:`drain`),
    before this process forks (the store must be idle then) and at the interpreter's exit.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition(threading.Lock())
        self._jobs: deque[Callable[[], None]] = deque()
        self._busy = False
        self._thread: threading.Thread | None = None

    def submit(self, job: Callable[[], None]) -> None:
        """Queue ``job``; the writer thread starts on first use."""
        with self._changed:
            self._jobs.append(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="amorsize-store-writer", daemon=True)
                self._thread.start()
            self._changed.notify_all()

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every queued write is done; False on timeout. A no-op in the writer itself."""
        if threading.current_thread() is self._thread:
            return True
        with self._changed:
            return self._changed.wait_for(lambda: not self._jobs and not self._busy, timeout)

    def _serve(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: bool(self._jobs))
                job = self._jobs.popleft()
                self._busy = True
            try:
                job()
            except BaseException as error:  # nobody waits for it: say so; the thread must go on,
                # or later writes would wait forever (SystemExit too: it means nothing here)
                warnings.warn(
                    f"amorsize could not write to its store: {error!r}", RuntimeWarning, stacklevel=1
                )
            finally:
                with self._changed:
                    self._busy = False
                    self._changed.notify_all()


_DEFERRED = _Deferred()

#: Per thread: how many store operations (of any store) the thread is inside (see ``_drain_deferred``).
_INSIDE = threading.local()


def _drain_deferred(timeout: float | None = None) -> None:
    """Wait for the deferred writes (up to ``timeout``), unless this thread is inside an operation
    of a store: the writer may need that store's lock, so waiting for it could deadlock (the
    operation then sees the writes made so far)."""
    if not getattr(_INSIDE, "depth", 0):
        _DEFERRED.drain(timeout)


def flush_deferred(timeout: float | None = None) -> bool:
    """Wait until this process's deferred store writes (:meth:`Store.record_run_later`) are done.

    Args:
        timeout: seconds to wait at most; None: no limit.

    Returns:
        True when none is left, False on timeout.
    """
    return _DEFERRED.drain(timeout)


_LIVE_STORES: weakref.WeakSet[Store] = weakref.WeakSet()


class Store(ClosingContext):
    """The embedded SQLite store: namespaced JSON values and the run history.

    Thread-safe (one connection behind a lock) and fork-safe (a child process opens its own
    connection). Every write is one transaction. Use it as a context manager, or call :meth:`close`.

    Example:
        >>> import pathlib, tempfile
        >>> tmp = tempfile.TemporaryDirectory()
        >>> store = Store(pathlib.Path(tmp.name) / "demo.sqlite3")
        >>> store.record_run({"function_key": "f", "n_jobs": 2, "measured_seconds": 1.5, "note": "hi"})
        1
        >>> [(r["n_jobs"], r["note"]) for r in store.runs()]
        [(2, 'hi')]
        >>> store.close()
        >>> tmp.cleanup()

    Args:
        path: the database file; default ``amorsize_home() / "amorsize.sqlite3"``. Created with
            mode 0o600 when missing (and its directory with 0o700).

    Raises:
        StoreError: the file or its directory is not private, or the database is unusable
            (damaged, or written by a newer Amorsize).
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else amorsize_home() / DATABASE_NAME
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self._closed = False
        self._depth = 0  # operations in progress (with the lock held): > 0 means the connection is busy
        with self._lock:
            self._connection()
        _LIVE_STORES.add(self)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"Store({str(self.path)!r}, {state})"

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    # -- connection management -------------------------------------------------------------

    def _before_fork(self) -> bool:
        """Close the connection if idle, keeping the lock (until after the fork) when it was free.

        Returns:
            True when the lock is now held and must be released in the parent after the fork.
        """
        if not self._lock.acquire(blocking=False):
            return False  # busy in another thread: the child will set the connection aside
        if self._depth == 0 and self._conn is not None and self._pid == os.getpid():
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None
        return True

    def _after_fork_in_parent(self) -> None:
        self._lock.release()

    def _after_fork_in_child(self) -> None:
        # Another parent thread may have held the lock or been inside an operation.
        self._lock = threading.RLock()
        self._depth = 0
        if self._conn is not None:
            _INHERITED_CONNECTIONS.append(self._conn)
            self._conn = None
        self._pid = os.getpid()

    def _connection(self) -> sqlite3.Connection:
        """The connection of this process, opened (and the schema migrated) on first use.

        Call with ``self._lock`` held.
        """
        if self._closed:
            raise StoreError(f"the Amorsize store {self.path} is closed; open a new Store")
        if self._pid != os.getpid():  # forked without the at-fork hook (or before it ran)
            self._after_fork_in_child()
        if self._conn is None:
            _ensure_private_file(self.path)
            with _translated(self.path):
                conn = sqlite3.connect(
                    str(self.path), timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
                )
                try:
                    # WAL: readers never block the writer. It is refused on some network file
                    # systems; SQLite then keeps its rollback journal, which is still correct.
                    _set_wal(conn)
                    # NORMAL is crash-safe in WAL mode; only a power loss may drop the last commit.
                    conn.execute("PRAGMA synchronous=NORMAL")
                    self._migrate(conn)
                except BaseException:
                    conn.close()
                    raise
            self._conn = conn
        return self._conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the Amorsize store {self.path} has schema version {version}, newer than this "
                f"Amorsize understands ({SCHEMA_VERSION}); upgrade amorsize, or set AMORSIZE_HOME "
                "to another directory"
            )
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have migrated while we waited for the write lock.
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            for step in _MIGRATIONS[version:]:
                for statement in step:
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE`` … ``COMMIT``), rolled back on error.

        For package modules that keep their own tables (added by a migration): everything done with
        the yielded connection inside the block commits together. It begins after this process's
        deferred writes (:meth:`record_run_later`) are done, so what it reads includes them and
        what it deletes stays deleted.

        Yields:
            The connection, for this thread only and only inside the block.

        Raises:
            StoreError: the database failed or stayed locked longer than :data:`BUSY_TIMEOUT`.
        """
        _drain_deferred()
        with self._writing() as conn:
            yield conn

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """:meth:`transaction` without waiting for the deferred writes (they never touch ``kv``)."""
        with self._reading() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock, _translated(self.path):
            conn = self._connection()
            self._depth += 1
            _INSIDE.depth = getattr(_INSIDE, "depth", 0) + 1
            try:
                yield conn
            finally:
                self._depth -= 1
                _INSIDE.depth -= 1

    def close(self) -> None:
        """Close the connection (after its deferred writes); later calls raise StoreError. Idempotent."""
        _drain_deferred()
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None
            self._closed = True

    # -- namespaced values -----------------------------------------------------------------

    def get(self, namespace: str, key: str) -> Any | None:
        """The value stored under ``(namespace, key)``, or None when there is none.

        Args:
            namespace: e.g. ``"calibration"`` or ``"plans"``.
            key: the key inside the namespace.

        Returns:
            The JSON value decoded (dict, list, str, int, float, bool or None).

        Raises:
            StoreError: the database failed.
        """
        with self._reading() as conn:
            row = conn.execute(
                "SELECT value FROM kv WHERE namespace = ? AND key = ?", (namespace, key)
            ).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, namespace: str, key: str, value: Any) -> None:
        """Store ``value`` under ``(namespace, key)``, replacing any previous value.

        Args:
            namespace: e.g. ``"calibration"`` or ``"plans"``.
            key: the key inside the namespace.
            value: a JSON-serialisable value.

        Raises:
            ConfigurationError: ``value`` is not JSON-serialisable.
            StoreError: the database failed.
        """
        text = _dumps(value, f"the value for {namespace}/{key}")
        with self._writing() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO kv (namespace, key, value, updated) VALUES (?, ?, ?, ?)",
                (namespace, key, text, time.time()),
            )

    def delete(self, namespace: str, key: str) -> bool:
        """Remove ``(namespace, key)``.

        Returns:
            True when there was a value to remove.

        Raises:
            StoreError: the database failed.
        """
        with self._writing() as conn:
            cursor = conn.execute("DELETE FROM kv WHERE namespace = ? AND key = ?", (namespace, key))
        return cursor.rowcount > 0

    def items(self, namespace: str) -> list[tuple[str, Any]]:
        """Every ``(key, value)`` of a namespace, sorted by key.

        Raises:
            StoreError: the database failed.
        """
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT key, value FROM kv WHERE namespace = ? ORDER BY key", (namespace,)
            ).fetchall()
        return [(key, json.loads(value)) for key, value in rows]

    def clear(self, namespace: str) -> int:
        """Remove every value of a namespace.

        Returns:
            How many values were removed.

        Raises:
            StoreError: the database failed.
        """
        with self._writing() as conn:
            cursor = conn.execute("DELETE FROM kv WHERE namespace = ?", (namespace,))
        return cursor.rowcount

    # -- run history -----------------------------------------------------------------------

    def record_run(self, record: Mapping[str, Any]) -> int:
        """Append one run to the history (keeping the newest :data:`MAX_RUNS`).

        Args:
            record: the keys of :data:`RUN_COLUMNS` (all optional; ``time`` defaults to now, as
                seconds since the epoch) plus any JSON-serialisable extras (breakdown, warnings…).

        Returns:
            The new run's id (increasing).

        Raises:
            ConfigurationError: a value is not JSON-serialisable, or ``time`` is not a finite number.
            StoreError: the database failed.
        """
        when = record.get("time")
        when = time.time() if when is None else when
        if isinstance(when, bool) or not isinstance(when, (int, float)) or not math.isfinite(when):
            raise ConfigurationError(f"a run's time must be seconds since the epoch (got {when!r})")
        columns = [record.get(name) for name in RUN_COLUMNS[1:]]
        extra = {k: v for k, v in record.items() if k not in RUN_COLUMNS and k != "id"}
        extra_text = _dumps(extra, "a run record's extra fields")
        placeholders = ", ".join("?" * (len(RUN_COLUMNS) + 1))
        _drain_deferred()  # after the queued rows: ids follow the order of the calls
        with self._writing() as conn:
            cursor = conn.execute(
                f"INSERT INTO runs ({', '.join(RUN_COLUMNS)}, extra) VALUES ({placeholders})",
                (float(when), *columns, extra_text),
            )
            run_id = cursor.lastrowid
            assert run_id is not None  # an INSERT into a rowid table always sets it
            conn.execute("DELETE FROM runs WHERE id <= ?", (run_id - MAX_RUNS,))
        return run_id

    def record_run_later(
        self, record: Mapping[str, Any], more: Callable[[], Mapping[str, Any]] | None = None
    ) -> None:
        """Append one run to the history from a background thread: the caller does not wait.

        The write is made in order with this process's other deferred writes, and before any later
        :meth:`runs`, :meth:`last_run_id`, :meth:`record_run`, :meth:`transaction` or :meth:`close`
        in this process begins (except inside another store operation of the same thread), before
        the process forks and at the interpreter's exit (see :func:`flush_deferred`). A failure is
        reported as a ``RuntimeWarning``, since nobody waits for it.

        Args:
            record: as for :meth:`record_run` (copied now); its ``time`` defaults to this call's.
            more: makes more fields of the record, called in the background: for fields that
                cost the caller time to make.
        """
        fields = {"time": time.time(), **record}

        def write() -> None:
            self.record_run({**fields, **(more() if more is not None else {})})
            self._checkpoint()

        _DEFERRED.submit(write)

    def _checkpoint(self) -> None:
        """Copy the WAL into the database now, if no reader is in the way (``PASSIVE``).

        Closing the last connection checkpoints too, and the store closes before every fork: done
        here, after a deferred write, a process pool's first fork does not pay it (~1.3 ms).
        """
        with self._reading() as conn:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def last_run_id(self) -> int:
        """The id of the newest recorded run, 0 when there is none (a cheap check for new runs).

        Ids only grow, also once the oldest runs are dropped (:data:`MAX_RUNS`).

        Raises:
            StoreError: the database failed.
        """
        _drain_deferred()
        with self._reading() as conn:
            (last,) = conn.execute("SELECT coalesce(max(id), 0) FROM runs").fetchone()
        return int(last)

    def runs(self, limit: int = 50, function_key: str | None = None) -> list[dict[str, Any]]:
        """The recorded runs, newest first.

        Args:
            limit: at most this many (>= 1).
            function_key: only the runs of this function.

        Returns:
            One dict per run: ``id``, the :data:`RUN_COLUMNS` and the record's extra keys.

        Raises:
            ConfigurationError: ``limit`` < 1.
            StoreError: the database failed.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigurationError(f"limit must be an integer >= 1 (got {limit!r})")
        query = f"SELECT id, {', '.join(RUN_COLUMNS)}, extra FROM runs"
        params: tuple[Any, ...] = ()
        if function_key is not None:
            query += " WHERE function_key = ?"
            params = (function_key,)
        query += " ORDER BY time DESC, id DESC LIMIT ?"
        _drain_deferred()
        with self._reading() as conn:
            rows = conn.execute(query, (*params, limit)).fetchall()
        result = []
        for row in rows:
            run: dict[str, Any] = json.loads(row[-1])
            run.update(zip(("id", *RUN_COLUMNS), row[:-1], strict=True))
            result.append(run)
        return result


def _before_fork() -> None:
    _drain_deferred(FORK_WAIT)  # an idle store closes its connection; a writing one cannot
    _HELD_ACROSS_FORK[:] = [store for store in list(_LIVE_STORES) if store._before_fork()]


def _after_fork_in_parent() -> None:
    for store in _HELD_ACROSS_FORK:
        store._after_fork_in_parent()
    _HELD_ACROSS_FORK.clear()


def _after_fork_in_child() -> None:
    global _DEFERRED
    _DEFERRED = _Deferred()  # the parent's queued writes are the parent's; its thread is not here
    _HELD_ACROSS_FORK.clear()
    for store in list(_LIVE_STORES):
        store._after_fork_in_child()
    _DEFAULT.lock = threading.Lock()


class _DefaultStoreSlot:
    """The process-wide store of :func:`default_store` (one slot, guarded by its lock)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.store: Store | None = None
        self.env: tuple[str | None, ...] = ()  # _home_env() when the store was opened


def _home_env() -> tuple[str | None, ...]:
    """The environment that :func:`amorsize_home` reads (platformdirs: ``XDG_DATA_HOME``, ``HOME``)."""
    return tuple(os.environ.get(name) for name in ("AMORSIZE_HOME", "XDG_DATA_HOME", "HOME"))


_DEFAULT = _DefaultStoreSlot()

if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
    )

atexit.register(lambda: _DEFERRED.drain(EXIT_WAIT))


def default_store() -> Store:
    """The process-wide store at the default path, opened on first use.

    A new one is opened when ``AMORSIZE_HOME`` changed or the previous one was closed; after a
    fork the child's store opens its own connection on first use.

    While the environment that names the home is unchanged, the open store is returned without
    looking at the file system again (the home's checks cost 20 µs, and up to 0.4–0.8 ms right after
    a run: that is after every run, for its history).

    Returns:
        The shared :class:`Store`.

    Raises:
        StoreError: the home or the database is not private or unusable.
    """
    env = _home_env()
    with _DEFAULT.lock:
        store = _DEFAULT.store
        if store is not None and not store.closed and _DEFAULT.env == env:
            return store
    path = amorsize_home() / DATABASE_NAME
    with _DEFAULT.lock:
        store = _DEFAULT.store
        if store is None or store.closed or store.path != path:
            # A replaced store is not closed: someone may still hold it; it closes when collected.
            store = _DEFAULT.store = Store(path)
        _DEFAULT.env = env
        return store
