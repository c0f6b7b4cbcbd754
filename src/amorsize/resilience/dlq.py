"""The dead-letter queue: items that failed for good, with why, kept for inspection and replay.

``execute(..., on_error="dlq")`` adds every item that failed (after its retries) to a
:class:`DeadLetterQueue` — the one given as ``dlq=``, or the default queue in the user's store — and
puts the placeholder at its position in the results::

    runner (parent) ── failures of a chunk, with their items ──► DeadLetterQueue.add_failures
                                                                  one transaction per chunk:
                                                                  INSERT entries, trim to max_entries
    any process ── get_entries / get_summary / replay_failed_items / export_json ──► same rows

Entries live in SQLite (the user's Amorsize store, or ``<directory>/amorsize.sqlite3``): several
processes can add, read and replay at once, each change one transaction. Items are stored as JSON
when the policy says so and the item allows it, pickled otherwise (loaded back only from an owner-only
database, see :mod:`amorsize.resilience._storage`). :meth:`DeadLetterQueue.export_json` and
:meth:`DeadLetterQueue.import_json` move entries to and from a JSON file for people and other tools.

Example:
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     dlq = DeadLetterQueue(DLQPolicy(directory=tmp))
    ...     _ = dlq.add({"id": 7}, ValueError("bad record"), retry_count=2)
    ...     summary = dlq.get_summary()
    ...     recovered, still_failed = replay_failed_items(dlq, lambda item: item["id"] * 10)
    ...     (summary.total_entries, summary.error_types, recovered, dlq.size())
    (1, {'ValueError': 1}, [70], 0)
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import pickle
import tempfile
import threading
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amorsize.errors import ConfigurationError
from amorsize.resilience._storage import Location, check_name, dumps, loads, open_store, resolve
from amorsize.resilience.retry import retries_of
from amorsize.run.backend import ItemFailure
from amorsize.store import Store

__all__ = [
    "DEFAULT_QUEUE",
    "DLQFormat",
    "DLQPolicy",
    "DLQSummary",
    "DeadLetterEntry",
    "DeadLetterQueue",
    "replay_failed_items",
]

#: The queue ``execute(..., on_error="dlq")`` uses when no ``dlq=`` is given.
DEFAULT_QUEUE = "default"

#: Entries kept per queue by default, oldest dropped first: the seed's default. At a few KB per entry
#: (the traceback dominates) that is tens of MB at most.
DEFAULT_MAX_ENTRIES = 10_000

#: Characters of an error message kept (a message can embed a whole payload).
MAX_MESSAGE_CHARS = 10_000


class DLQFormat(enum.Enum):
    """How items are stored: JSON when they allow it (readable with any SQLite tool), or pickled."""

    JSON = "json"
    PICKLE = "pickle"


@dataclass(frozen=True)
class DLQPolicy:
    """Where and how a :class:`DeadLetterQueue` keeps its entries.

    Attributes:
        directory: a directory for the database (``<directory>/amorsize.sqlite3``, created with mode
            0700), or None for the user's Amorsize store.
        format: :attr:`DLQFormat.PICKLE` (any picklable item) or :attr:`DLQFormat.JSON` (items stored
            as JSON; an item JSON cannot hold is pickled instead, so nothing is lost).
        max_entries: entries kept per queue, oldest dropped first; 0 for no limit.
        include_traceback: keep the formatted traceback of each failure.
        auto_persist: write each entry at once (True), or keep entries in this object until
            :meth:`DeadLetterQueue.persist` (False).

    Raises:
        ConfigurationError: a field out of range (the message says which and what was received).
    """

    directory: str | os.PathLike[str] | None = None
    format: DLQFormat = DLQFormat.PICKLE
    max_entries: int = DEFAULT_MAX_ENTRIES
    include_traceback: bool = True
    auto_persist: bool = True

    def __post_init__(self) -> None:
        fmt: Any = self.format
        if not isinstance(fmt, DLQFormat):
            try:
                object.__setattr__(self, "format", DLQFormat(fmt))
            except ValueError:
                raise ConfigurationError(
                    f"format must be DLQFormat.JSON or DLQFormat.PICKLE (got {self.format!r})"
                ) from None
        limit = self.max_entries
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ConfigurationError(f"max_entries must be an integer >= 0, 0 for no limit (got {limit!r})")
        if self.directory is not None and not isinstance(self.directory, (str, os.PathLike)):
            raise ConfigurationError(
                f"directory must be a path or None (got {type(self.directory).__name__})"
            )


@dataclass(frozen=True)
class DeadLetterEntry:
    """One item that failed for good.

    Attributes:
        item: the input item.
        error_type: the exception's type name.
        error_message: its message.
        traceback: its formatted traceback ("" when not kept).
        retry_count: retries made before it failed (0 without a retry policy).
        timestamp: when it was added (seconds since the epoch).
        metadata: e.g. ``{"index": 12, "function": "mod.fetch"}`` for entries added by a run.
        id: its id in the queue (None until persisted).
        replayable: False when the item could be neither pickled nor JSON-encoded: ``item`` is then
            its ``repr`` only.
    """

    item: Any
    error_type: str
    error_message: str
    traceback: str = ""
    retry_count: int = 0
    timestamp: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)
    id: int | None = None
    replayable: bool = True


@dataclass(frozen=True)
class DLQSummary:
    """Counts over a queue. Also readable as a mapping (``summary["total_entries"]``), like the seed's.

    Attributes:
        total_entries: entries in the queue.
        error_types: entries per error type name.
        avg_retry_count: mean retries made before failing.
        oldest: time of the oldest entry, or None when empty.
        newest: time of the newest entry, or None when empty.
    """

    total_entries: int
    error_types: dict[str, int]
    avg_retry_count: float
    oldest: float | None = None
    newest: float | None = None

    def __getitem__(self, key: str) -> Any:
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)


_COLUMNS = "id, item_format, item, error_type, error_message, traceback, retry_count, time, metadata"


def _encode_item(item: Any, fmt: DLQFormat) -> tuple[str, bytes]:
    if fmt is DLQFormat.JSON:
        try:
            return "json", json.dumps(item).encode()
        except (TypeError, ValueError):
            pass  # not JSON: pickled instead, so the item can still be replayed
    try:
        return "pickle", dumps(item)
    except Exception:
        return "repr", repr(item).encode()  # neither: kept for reading, cannot be replayed


class DeadLetterQueue:
    """A persistent, size-limited queue of failed items, safe to share between processes.

    Args:
        policy: where and how; default :class:`DLQPolicy()` (the user's store, pickled items).
        name: the queue's name inside its database (several queues can share one).

    Raises:
        ConfigurationError: a bad policy or name.
    """

    def __init__(self, policy: DLQPolicy | None = None, *, name: str = DEFAULT_QUEUE) -> None:
        if policy is not None and not isinstance(policy, DLQPolicy):
            raise ConfigurationError(f"policy must be a DLQPolicy (got {type(policy).__name__})")
        self.policy = policy if policy is not None else DLQPolicy()
        self.name = check_name(name, "dead-letter queue")
        self._location = resolve(self.name, directory=self.policy.directory, what="dead-letter queue")
        self._pending: list[tuple[Any, ...]] = []  # rows not persisted yet (auto_persist=False)
        self._lock = threading.Lock()  # guards _pending; the database has its own transactions

    def __repr__(self) -> str:
        return f"DeadLetterQueue({self._location.describe()})"

    @property
    def location(self) -> Location:
        """Where the queue lives."""
        return self._location

    @contextmanager
    def _store(self) -> Iterator[Store]:
        with open_store(self._location) as store:
            yield store

    def _row(
        self, item: Any, error_type: str, message: str, tb: str, retries: int, meta: dict[str, Any]
    ) -> tuple[Any, ...]:
        fmt, blob = _encode_item(item, self.policy.format)
        try:
            meta_text = json.dumps(meta)
        except (TypeError, ValueError):
            meta_text = json.dumps({key: repr(value) for key, value in meta.items()})
        return (
            self.name,
            time.time(),
            fmt,
            blob,
            error_type,
            message[:MAX_MESSAGE_CHARS],
            tb if self.policy.include_traceback else "",
            int(retries),
            meta_text,
        )

    def _insert(self, rows: Sequence[tuple[Any, ...]]) -> list[int]:
        if not rows:
            return []
        ids: list[int] = []
        with self._store() as store, store.transaction() as conn:
            for row in rows:
                cursor = conn.execute(
                    "INSERT INTO dlq_entries (queue, time, item_format, item, error_type, error_message, "
                    "traceback, retry_count, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    row,
                )
                assert cursor.lastrowid is not None
                ids.append(cursor.lastrowid)
            if self.policy.max_entries:
                conn.execute(
                    "DELETE FROM dlq_entries WHERE queue = ? AND id <= (SELECT id FROM dlq_entries "
                    "WHERE queue = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                    (self.name, self.name, self.policy.max_entries),
                )
        return ids

    def add(
        self,
        item: Any,
        error: BaseException | str,
        retry_count: int | None = None,
        metadata: dict[str, Any] | None = None,
        *,
        traceback_text: str = "",
    ) -> DeadLetterEntry:
        """Add one failed item.

        Args:
            item: the item.
            error: the exception it failed with (or a message).
            retry_count: retries made; default: what the retry wrapper recorded on ``error``, else 0.
            metadata: JSON-serialisable details (values that are not are stored as their repr).
            traceback_text: the traceback, when ``error`` no longer carries it (a worker's).

        Returns:
            The entry as stored.
        """
        if retry_count is None:
            retry_count = retries_of(error) if isinstance(error, BaseException) else 0
        row = self._row(item, *_describe(error, traceback_text), retry_count, dict(metadata or {}))
        entry_id: int | None = None
        if self.policy.auto_persist:
            entry_id = self._insert([row])[0]
        else:
            with self._lock:
                self._pending.append(row)
        return _entry(row, entry_id, item)

    def add_failures(
        self, start: int, items: Sequence[Any], failures: Sequence[ItemFailure], metadata: dict[str, Any]
    ) -> None:
        """Add a run's failed items in one transaction (the runner's ``on_outcome``, via the API).

        Args:
            start: input position of ``items[0]``.
            items: the items of the chunk.
            failures: the chunk's failures.
            metadata: added to each entry's metadata, with the item's ``index``.
        """
        rows = [
            self._row(
                items[failure.index - start],
                *_describe(failure.error, failure.traceback),
                retries_of(failure.error),
                {**metadata, "index": failure.index},
            )
            for failure in failures
        ]
        if self.policy.auto_persist:
            self._insert(rows)
        else:
            with self._lock:
                self._pending.extend(rows)

    def persist(self) -> int:
        """Write the entries kept in memory (``auto_persist=False``). Returns how many were written."""
        with self._lock:
            rows, self._pending = self._pending, []
        try:
            return len(self._insert(rows))
        except BaseException:
            with self._lock:
                self._pending = rows + self._pending
            raise

    def load(self) -> int:
        """Return how many entries are persisted (entries are always read from the database).

        Kept for the seed's ``dlq.load()``: there is nothing to load into memory first.
        """
        with self._store() as store, store.transaction() as conn:
            (count,) = conn.execute(
                "SELECT COUNT(*) FROM dlq_entries WHERE queue = ?", (self.name,)
            ).fetchone()
        return int(count)

    def get_entries(self, limit: int | None = None) -> list[DeadLetterEntry]:
        """The entries, oldest first (persisted ones, then those not persisted yet).

        Raises:
            StoreError: the database failed, is not private, or an item cannot be unpickled here.
        """
        query = f"SELECT {_COLUMNS} FROM dlq_entries WHERE queue = ? ORDER BY id"
        params: tuple[Any, ...] = (self.name,)
        if limit is not None:
            query += " LIMIT ?"
            params += (limit,)
        entries = []
        with self._store() as store:
            with store.transaction() as conn:
                rows = conn.execute(query, params).fetchall()
            for entry_id, fmt, blob, etype, message, tb, retries, when, meta in rows:
                item = _decode_item(fmt, blob, store)
                entries.append(
                    DeadLetterEntry(
                        item, etype, message, tb, retries, when, json.loads(meta), entry_id, fmt != "repr"
                    )
                )
        with self._lock:
            pending = list(self._pending)
        for row in pending:
            if limit is not None and len(entries) >= limit:
                break
            entries.append(_entry(row, None, _decode_item(row[2], row[3], None)))
        return entries

    def size(self) -> int:
        """Entries in the queue (persisted and not yet persisted)."""
        return self.load() + len(self._pending)

    def get_summary(self) -> DLQSummary:
        """Counts over the queue: total, per error type, mean retries, oldest and newest times."""
        with self._store() as store, store.transaction() as conn:
            rows = conn.execute(
                "SELECT error_type, retry_count, time FROM dlq_entries WHERE queue = ?", (self.name,)
            ).fetchall()
        with self._lock:
            rows += [(row[4], row[7], row[1]) for row in self._pending]
        times = [row[2] for row in rows]
        return DLQSummary(
            total_entries=len(rows),
            error_types=dict(Counter(row[0] for row in rows)),
            avg_retry_count=sum(row[1] for row in rows) / len(rows) if rows else 0.0,
            oldest=min(times) if times else None,
            newest=max(times) if times else None,
        )

    def remove(self, ids: Sequence[int]) -> int:
        """Remove persisted entries by id. Returns how many were removed."""
        with self._store() as store, store.transaction() as conn:
            return sum(
                conn.execute(
                    "DELETE FROM dlq_entries WHERE queue = ? AND id = ?", (self.name, entry_id)
                ).rowcount
                for entry_id in ids
            )

    def clear(self) -> int:
        """Remove every entry. Returns how many were removed."""
        with self._lock:
            pending, self._pending = len(self._pending), []
        with self._store() as store, store.transaction() as conn:
            return pending + conn.execute("DELETE FROM dlq_entries WHERE queue = ?", (self.name,)).rowcount

    def export_json(self, path: str | os.PathLike[str]) -> int:
        """Write the entries to a JSON file (mode 0600, replaced atomically), for people and tools.

        Each entry has ``item`` when the item is JSON-serialisable, and always ``item_repr``.

        Returns:
            How many entries were written.
        """
        records = []
        for entry in self.get_entries():
            record: dict[str, Any] = {
                "id": entry.id,
                "item_repr": repr(entry.item),
                "error_type": entry.error_type,
                "error_message": entry.error_message,
                "traceback": entry.traceback,
                "retry_count": entry.retry_count,
                "timestamp": entry.timestamp,
                "metadata": entry.metadata,
            }
            try:
                json.dumps(entry.item)
                record["item"] = entry.item
            except (TypeError, ValueError):
                pass
            records.append(record)
        target = Path(os.fspath(path)).expanduser()
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump({"queue": self.name, "entries": records}, handle, indent=2)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return len(records)

    def import_json(self, path: str | os.PathLike[str]) -> int:
        """Add the entries of a JSON file written by :meth:`export_json` (JSON only: nothing is unpickled).

        Entries without an ``item`` (it was not JSON-serialisable) cannot be replayed and are skipped
        with a warning.

        Returns:
            How many entries were added.

        Raises:
            ConfigurationError: the file is not such an export.
        """
        try:
            with open(os.fspath(path), encoding="utf-8") as handle:
                document = json.load(handle)
            records = document["entries"]
            assert isinstance(records, list)
        except (OSError, ValueError, KeyError, TypeError, AssertionError) as exc:
            raise ConfigurationError(
                f"{os.fspath(path)} is not a dead-letter export written by DeadLetterQueue.export_json "
                f"({type(exc).__name__}: {exc})"
            ) from exc
        rows = []
        skipped = 0
        for record in records:
            if "item" not in record:
                skipped += 1
                continue
            rows.append(
                self._row(
                    record["item"],
                    str(record.get("error_type", "Error")),
                    str(record.get("error_message", "")),
                    str(record.get("traceback", "")),
                    int(record.get("retry_count", 0)),
                    dict(record.get("metadata", {})),
                )
            )
        if skipped:
            warnings.warn(
                f"{skipped} entries of {os.fspath(path)} have no JSON item (only its repr) and were not "
                "imported: they could not be replayed",
                stacklevel=2,
            )
        return len(self._insert(rows))


def _message(error: BaseException) -> str:
    try:
        return str(error)
    except Exception:
        return f"<str() of the {type(error).__name__} failed>"


def _describe(error: BaseException | str, tb: str) -> tuple[str, str, str]:
    """(type name, message, traceback) of an exception, or of a plain message."""
    if not isinstance(error, BaseException):
        return "Error", str(error), tb
    if not tb and error.__traceback__ is not None:
        tb = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return type(error).__name__, _message(error), tb


def _decode_item(fmt: str, blob: bytes | None, store: Store | None) -> Any:
    if blob is None:
        return None
    if fmt == "json":
        return json.loads(bytes(blob).decode())
    if fmt == "pickle":
        if store is None:
            return pickle.loads(blob)  # our own bytes, made in this process and never stored yet
        return loads(blob, store)
    return bytes(blob).decode(errors="replace")


def _entry(row: tuple[Any, ...], entry_id: int | None, item: Any) -> DeadLetterEntry:
    _, when, fmt, _, etype, message, tb, retries, meta = row
    return DeadLetterEntry(item, etype, message, tb, retries, when, json.loads(meta), entry_id, fmt != "repr")


def replay_failed_items(
    dlq: DeadLetterQueue, func: Callable[[Any], Any], *, remove_recovered: bool = True
) -> tuple[list[Any], list[DeadLetterEntry]]:
    """Call ``func`` again on every item of ``dlq``, in this process, oldest first.

    Items that succeed are removed from the queue (unless ``remove_recovered`` is off); items that
    fail again stay, with their error, traceback and ``retry_count + 1`` updated. For many items, run
    them in parallel instead: ``execute(func, [e.item for e in dlq.get_entries()], on_error="dlq")``.

    Args:
        dlq: the queue.
        func: the (fixed) function.
        remove_recovered: remove the entries whose item now succeeds.

    Returns:
        ``(recovered_results, still_failed)``: the results of the items that succeeded, in queue
        order, and the entries that failed again (as updated).
    """
    dlq.persist()
    recovered: list[Any] = []
    recovered_ids: list[int] = []
    still_failed: list[DeadLetterEntry] = []
    updates: list[tuple[Any, ...]] = []
    for entry in dlq.get_entries():
        if not entry.replayable:
            still_failed.append(entry)
            continue
        try:
            result = func(entry.item)
        except Exception as error:
            tb = "".join(traceback.format_exception(type(error), error, error.__traceback__))
            again = DeadLetterEntry(
                entry.item,
                type(error).__name__,
                _message(error)[:MAX_MESSAGE_CHARS],
                tb if dlq.policy.include_traceback else "",
                entry.retry_count + 1,
                time.time(),
                entry.metadata,
                entry.id,
            )
            still_failed.append(again)
            updates.append(
                (
                    again.error_type,
                    again.error_message,
                    again.traceback,
                    again.retry_count,
                    again.timestamp,
                    entry.id,
                )
            )
            continue
        recovered.append(result)
        if entry.id is not None:
            recovered_ids.append(entry.id)
    with dlq._store() as store, store.transaction() as conn:
        conn.executemany(
            "UPDATE dlq_entries SET error_type = ?, error_message = ?, traceback = ?, retry_count = ?, "
            "time = ? WHERE id = ?",
            updates,
        )
        if remove_recovered:
            conn.executemany(
                "DELETE FROM dlq_entries WHERE id = ?", [(entry_id,) for entry_id in recovered_ids]
            )
    return recovered, still_failed
