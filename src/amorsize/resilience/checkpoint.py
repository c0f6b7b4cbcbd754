"""Checkpoint and resume: finished results are committed as they arrive; a rerun skips them.

``execute(func, data, checkpoint="nightly")`` (or a path) keeps a :class:`RunCheckpoint`::

    first run (killed at any moment, even by SIGKILL)           next run with the same checkpoint
    ─────────────────────────────────────────────────           ────────────────────────────────
    header: function key, plan, input length                    header: same function? same length?
    dry-run results ── commit ──► checkpoint_results rows          (else CheckpointMismatchError)
    each finished chunk ── commit (one transaction) ──► rows    rows ──► precomputed results, no dry run
       one row per run of successes: the results pickled,       runner pulls every item; a stored
       and a 16-byte digest of each item's pickle               position: digest must match → reused,
                                                                    not sent; others run and commit
    completed, nothing failed ──► checkpoint deleted            same at the end

Exactly once: a result committed before the kill is never computed again — its item is skipped, not
sent. Items whose result was not committed when the process died (chunks in flight, at most
``max_in_flight`` chunks; the dry run's items if it was killed before the dry run's commit) run
again. Failed items are not committed: a resumed run tries them again.

Identity: the checkpoint belongs to ``function_key(func)`` (:mod:`amorsize.measure.identity`, a
digest of the code, constants, defaults and captured values) and to the data, through per-item
digests checked as the items are pulled, so a generator is verified as it is consumed, never read
twice. A mismatch raises :class:`~amorsize.errors.CheckpointMismatchError` unless the run passes
``force_resume=True``. Storage: :mod:`amorsize.resilience._storage` (owner-only SQLite, WAL; each
commit survives the process being killed; ``synchronous=NORMAL`` means a power cut may lose the last
commits, never corrupt the file).

The seed's manual API (:class:`CheckpointManager`, :class:`CheckpointState`,
:func:`get_pending_items`, :func:`merge_results`) saves whole states in the same databases, and can
load a run's checkpoint as a :class:`CheckpointState`.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from amorsize.errors import CheckpointMismatchError, ConfigurationError, StoreError
from amorsize.resilience._storage import (
    DIGEST_SIZE,
    Location,
    dumps,
    item_digest,
    loads,
    open_store,
    resolve,
)
from amorsize.run.backend import ItemFailure
from amorsize.store import DATABASE_NAME, Store

__all__ = [
    "FILE_CHECKPOINT_NAME",
    "CheckpointManager",
    "CheckpointPolicy",
    "CheckpointState",
    "RunCheckpoint",
    "get_pending_items",
    "merge_results",
]

#: The name of the checkpoint inside a database given by path (one run's checkpoint per file).
FILE_CHECKPOINT_NAME = "checkpoint"

_JSON = "json"
_PICKLE = "pickle"


def _json_text(value: Any, what: str) -> str:
    try:
        return json.dumps(value, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"{what} must be JSON-serialisable with save_format='json' (got {exc}); use "
            "save_format='pickle' for other objects"
        ) from exc


def _mismatch(location: Location, what: str, fix_data: bool = False) -> CheckpointMismatchError:
    hint = (
        "pass force_resume=True to reuse its results anyway (e.g. the pickles of equal items differ: "
        "sets of strings), "
        if fix_data
        else "pass force_resume=True to reuse its results anyway, "
    )
    return CheckpointMismatchError(
        f"checkpoint {location.describe()} {what}; {hint}or delete it to start over "
        f"(CheckpointManager().delete_checkpoint(...)), or use another checkpoint name"
    )


class RunCheckpoint:
    """The checkpoint of one ``execute``/``imap`` run (see the module docstring). Open with :meth:`open`.

    Attributes:
        location: where it lives.
        resumed: True when an earlier run's checkpoint was found.
        plan: the plan recorded by the run that made it (``executor``, ``n_jobs``, ``chunksize``),
            or None for a new checkpoint.
        results: position → result, committed by earlier runs (the results this run reuses).
    """

    def __init__(
        self,
        location: Location,
        store: Store,
        *,
        function_key: str,
        function_name: str,
        n_items: int | None,
        force: bool,
    ) -> None:
        self.location = location
        self._store = store
        self._function_key = function_key
        self._function_name = function_name
        self._n_items = n_items
        self._force = force
        self._digests: dict[int, bytes] = {}
        self.results: dict[int, Any] = {}
        self.plan: dict[str, Any] | None = None
        self.resumed = False
        self.deleted = False
        self._load()

    @classmethod
    @contextmanager
    def open(
        cls,
        spec: str | os.PathLike[str],
        *,
        function_key: str,
        function_name: str,
        n_items: int | None,
        force: bool,
    ) -> Iterator[RunCheckpoint]:
        """Open (or prepare to create) the checkpoint ``spec``: a name, or a path to a database file.

        Raises:
            ConfigurationError: ``spec`` is not a valid name or path, or names a manual checkpoint.
            CheckpointMismatchError: it was made by another function or for input of another length.
            StoreError: the location is not private or the database is unusable.
        """
        location = resolve(spec, directory=None, what=FILE_CHECKPOINT_NAME)
        remove_file = False
        with open_store(location) as store:
            checkpoint = cls(
                location,
                store,
                function_key=function_key,
                function_name=function_name,
                n_items=n_items,
                force=force,
            )
            yield checkpoint
            remove_file = checkpoint.deleted and location.database is not None and _empty(store)
        if remove_file and location.database is not None:
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{location.database}{suffix}")

    def _load(self) -> None:
        with self._store.transaction() as conn:
            row = conn.execute(
                "SELECT kind, function_key, n_items, info FROM checkpoints WHERE name = ?",
                (self.location.name,),
            ).fetchone()
            if row is None:
                return
            kind, key, n_items, info = row
            rows = conn.execute(
                "SELECT start, count, digests, results FROM checkpoint_results WHERE name = ? ORDER BY start",
                (self.location.name,),
            ).fetchall()
        if kind != "run":
            raise ConfigurationError(
                f"checkpoint {self.location.describe()} was saved with CheckpointManager, not by a run; "
                "use another checkpoint name for execute/imap, or delete that one first"
            )
        if key != self._function_key and not self._force:
            raise _mismatch(
                self.location,
                f"was made by another function ({key}, now {self._function_key}): its code, defaults or "
                f"captured values changed, so its {sum(r[1] for r in rows)} stored results may not be "
                "this function's",
            )
        if n_items is not None and self._n_items is not None and n_items != self._n_items and not self._force:
            raise _mismatch(
                self.location,
                f"was made for {n_items} items, but this data has {self._n_items}: the data changed",
            )
        self.resumed = True
        self.plan = json.loads(info).get("plan")
        for start, count, digests, blob in rows:
            values = loads(blob, self._store)
            if not isinstance(values, list) or len(values) != count or len(digests) != count * DIGEST_SIZE:
                raise StoreError(
                    f"checkpoint {self.location.describe()} is damaged (row at position {start}); "
                    "delete it to start over"
                )
            for offset, value in enumerate(values):
                self.results[start + offset] = value
                self._digests[start + offset] = digests[offset * DIGEST_SIZE : (offset + 1) * DIGEST_SIZE]

    def check(self, position: int, item: Any) -> None:
        """Refuse to reuse the stored result at ``position`` if ``item`` is not the item it came from.

        Raises:
            CheckpointMismatchError: the item differs (and ``force`` is off).
        """
        expected = self._digests.pop(position, None)
        if expected is None or self._force:
            return
        if item_digest(item) != expected:
            raise _mismatch(
                self.location,
                f"holds a result for item {position}, but this data's item {position} differs from the "
                f"one it was computed from ({type(item).__name__}: {item!r:.60}): the data changed",
                fix_data=True,
            )

    def begin(self, plan: dict[str, Any]) -> None:
        """Record the header of a new checkpoint (no-op when resuming): function, plan, input length."""
        now = time.time()
        with self._store.transaction() as conn:
            if self.resumed:
                conn.execute("UPDATE checkpoints SET updated = ? WHERE name = ?", (now, self.location.name))
                return
            conn.execute(
                "INSERT INTO checkpoints (name, kind, created, updated, function_key, function_name, "
                "n_items, info) VALUES (?, 'run', ?, ?, ?, ?, ?, ?)",
                (
                    self.location.name,
                    now,
                    now,
                    self._function_key,
                    self._function_name,
                    self._n_items,
                    json.dumps({"plan": plan}),
                ),
            )
        self.plan = plan

    def commit(
        self, start: int, items: Sequence[Any], results: Sequence[Any], failures: Sequence[ItemFailure]
    ) -> None:
        """Commit fresh results of consecutive items, failed ones left out (the runner's ``on_outcome``).

        Raises:
            ConfigurationError: a result cannot be pickled (it cannot be checkpointed).
            StoreError: the database failed.
        """
        self._write(self._segments(start, items, results, failures))

    def commit_precomputed(self, blocks: Sequence[tuple[int, Sequence[Any], Sequence[Any]]]) -> None:
        """Commit dry-run results in one transaction, leaving out the items that failed there.

        Args:
            blocks: ``(start, items, results)``, each of consecutive positions from ``start``: the
                dry run's leading items, and each item it took further along the input.

        Raises:
            ConfigurationError: a result cannot be pickled. StoreError: the database failed.
        """
        from amorsize.run.runner import Failed  # the marker the dry run returns for failed items

        segments: list[tuple[int, bytes, bytes, int]] = []
        for start, items, results in blocks:
            failures = [
                ItemFailure(position, value.error)
                for position, value in enumerate(results, start)
                if isinstance(value, Failed)
            ]
            segments += self._segments(start, items, results, failures)
        self._write(segments)

    @staticmethod
    def _segments(
        start: int, items: Sequence[Any], results: Sequence[Any], failures: Sequence[ItemFailure]
    ) -> list[tuple[int, bytes, bytes, int]]:
        """``(first position, item digests, pickled results, count)`` per run of results not failed."""
        failed = {failure.index - start for failure in failures}
        segments: list[tuple[int, bytes, bytes, int]] = []
        offset = 0
        while offset < len(results):
            if offset in failed:
                offset += 1
                continue
            end = offset
            while end < len(results) and end not in failed:
                end += 1
            values = list(results[offset:end])
            try:
                blob = dumps(values)
            except Exception as exc:
                raise ConfigurationError(
                    f"a result among items {start + offset}..{start + end - 1} cannot be pickled, so it "
                    f"cannot be checkpointed ({type(exc).__name__}: {exc}); return plain data, or run "
                    "without checkpoint="
                ) from exc
            digests = b"".join(item_digest(item) for item in items[offset:end])
            segments.append((start + offset, digests, blob, end - offset))
            offset = end
        return segments

    def _write(self, segments: Sequence[tuple[int, bytes, bytes, int]]) -> None:
        """Insert ``segments`` (see :meth:`_segments`) in one transaction."""
        if not segments:
            return
        with self._store.transaction() as conn:
            conn.executemany(
                "INSERT INTO checkpoint_results (name, start, count, digests, results) "
                "VALUES (?, ?, ?, ?, ?)",
                [
                    (self.location.name, first, count, digests, blob)
                    for first, digests, blob, count in segments
                ],
            )

    def finish(self, *, n_results: int, completed: bool, ok: bool, keep: bool) -> None:
        """End of a run: check the data reached every stored position; delete the checkpoint if done.

        Args:
            n_results: results the run produced.
            completed: the run went through all its input.
            ok: no item failed.
            keep: keep the checkpoint even after a complete, failure-free run.

        Raises:
            CheckpointMismatchError: the data ended before positions the checkpoint holds results for.
        """
        if not completed:
            return
        beyond = [position for position in self.results if position >= n_results]
        if beyond and not self._force:
            raise _mismatch(
                self.location,
                f"holds results up to item {max(beyond)}, but this data ended after {n_results} items: "
                "the data changed",
            )
        if ok and not keep:
            self.delete()

    def delete(self) -> None:
        """Remove the checkpoint (its header and results)."""
        with self._store.transaction() as conn:
            _delete(conn, self.location.name)
        self.deleted = True


def _delete(conn: Any, name: str) -> bool:
    found = conn.execute("DELETE FROM checkpoints WHERE name = ?", (name,)).rowcount > 0
    found |= conn.execute("DELETE FROM checkpoint_results WHERE name = ?", (name,)).rowcount > 0
    found |= conn.execute("DELETE FROM checkpoint_states WHERE name = ?", (name,)).rowcount > 0
    return bool(found)


def _empty(store: Store) -> bool:
    """Whether a database given by path holds nothing of amorsize.resilience any more (it may go)."""
    with store.transaction() as conn:
        return not any(
            conn.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone()
            for table in (
                "checkpoints",
                "checkpoint_results",
                "checkpoint_states",
                "dlq_entries",
                "kv",
                "runs",
            )
        )


# -- the seed's manual API ------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointPolicy:
    """Where and how :class:`CheckpointManager` keeps states.

    Attributes:
        checkpoint_dir: a directory for the database (``<dir>/amorsize.sqlite3``, created with mode
            0700), or None for the user's Amorsize store.
        checkpoint_interval: items between two saves in your loop (:meth:`CheckpointManager.due`).
        save_format: ``"pickle"`` (any picklable results, kept in an owner-only database) or
            ``"json"`` (readable with any SQLite tool; results must be JSON-serialisable).
        keep_history: older versions kept besides the newest (0: only the newest).
        auto_cleanup: :meth:`CheckpointManager.complete` deletes the checkpoint.

    Raises:
        ConfigurationError: a field out of range (the message says which and what was received).
    """

    checkpoint_dir: str | os.PathLike[str] | None = None
    checkpoint_interval: int = 100
    save_format: Literal["pickle", "json"] = "pickle"
    keep_history: int = 2
    auto_cleanup: bool = True

    def __post_init__(self) -> None:
        interval = self.checkpoint_interval
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ConfigurationError(f"checkpoint_interval must be an integer >= 1 (got {interval!r})")
        if self.save_format not in (_PICKLE, _JSON):
            raise ConfigurationError(f"save_format must be 'pickle' or 'json' (got {self.save_format!r})")
        history = self.keep_history
        if isinstance(history, bool) or not isinstance(history, int) or history < 0:
            raise ConfigurationError(f"keep_history must be an integer >= 0 (got {history!r})")
        if self.checkpoint_dir is not None and not isinstance(self.checkpoint_dir, (str, os.PathLike)):
            raise ConfigurationError(
                f"checkpoint_dir must be a path or None (got {type(self.checkpoint_dir).__name__})"
            )


@dataclass(frozen=True)
class CheckpointState:
    """A snapshot of a job: which positions are done and their results.

    Attributes:
        completed_indices: input positions finished, in any order.
        results: their results, aligned with ``completed_indices``.
        total_items: the input's length.
        checkpoint_time: when it was taken (seconds since the epoch).
        n_jobs: workers used (informational).
        chunksize: chunk size used (informational).
        metadata: anything JSON-serialisable (or picklable with ``save_format='pickle'``).

    Raises:
        ConfigurationError: ``results`` and ``completed_indices`` differ in length.
    """

    completed_indices: list[int]
    results: list[Any]
    total_items: int
    checkpoint_time: float
    n_jobs: int = 1
    chunksize: int = 1
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.completed_indices) != len(self.results):
            raise ConfigurationError(
                f"a CheckpointState needs one result per completed index (got {len(self.results)} results "
                f"for {len(self.completed_indices)} indices)"
            )

    def _fields(self) -> dict[str, Any]:
        return {
            "completed_indices": list(self.completed_indices),
            "results": list(self.results),
            "total_items": self.total_items,
            "checkpoint_time": self.checkpoint_time,
            "n_jobs": self.n_jobs,
            "chunksize": self.chunksize,
            "metadata": dict(self.metadata),
        }


class CheckpointManager:
    """Save, load, list and delete checkpoint states by name (the seed's manual API).

    Names are the same as ``execute(..., checkpoint=...)``'s: a name lives in the policy's database,
    a path (containing ``/``) is a database file. A run's checkpoint loads as a
    :class:`CheckpointState` too.

    Args:
        policy: where and how; default :class:`CheckpointPolicy()` (the user's Amorsize store).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     manager = CheckpointManager(CheckpointPolicy(checkpoint_dir=tmp))
        ...     state = CheckpointState([0, 1], ["a", "b"], total_items=3, checkpoint_time=0.0)
        ...     manager.save_checkpoint("job", state)
        ...     loaded = manager.load_checkpoint("job")
        ...     get_pending_items(["x", "y", "z"], loaded)
        1
        ([2], ['z'])
    """

    def __init__(self, policy: CheckpointPolicy | None = None) -> None:
        if policy is not None and not isinstance(policy, CheckpointPolicy):
            raise ConfigurationError(f"policy must be a CheckpointPolicy (got {type(policy).__name__})")
        self.policy = policy if policy is not None else CheckpointPolicy()

    def _location(self, name: str | os.PathLike[str]) -> Location:
        return resolve(name, directory=self.policy.checkpoint_dir, what=FILE_CHECKPOINT_NAME)

    def save_checkpoint(self, name: str | os.PathLike[str], state: CheckpointState) -> int:
        """Save ``state`` as the newest version of ``name``, keeping ``keep_history`` older ones.

        Returns:
            The new version number (1, 2, …).

        Raises:
            ConfigurationError: a bad name, a run's checkpoint of that name exists, or (JSON) the
                state is not JSON-serialisable.
            StoreError: the database failed or is not private.
        """
        if not isinstance(state, CheckpointState):
            raise ConfigurationError(f"state must be a CheckpointState (got {type(state).__name__})")
        location = self._location(name)
        if self.policy.save_format == _JSON:
            blob: bytes = _json_text(state._fields(), "a checkpoint state").encode()
        else:
            blob = dumps(state._fields())
        now = time.time()
        with open_store(location) as store, store.transaction() as conn:
            row = conn.execute("SELECT kind FROM checkpoints WHERE name = ?", (location.name,)).fetchone()
            if row is not None and row[0] != "manual":
                raise ConfigurationError(
                    f"checkpoint {location.describe()} belongs to a run (execute/imap); load it, or "
                    "delete it before saving a state under that name"
                )
            if row is None:
                conn.execute(
                    "INSERT INTO checkpoints (name, kind, created, updated, n_items) "
                    "VALUES (?, 'manual', ?, ?, ?)",
                    (location.name, now, now, state.total_items),
                )
            else:
                conn.execute(
                    "UPDATE checkpoints SET updated = ?, n_items = ? WHERE name = ?",
                    (now, state.total_items, location.name),
                )
            (last,) = conn.execute(
                "SELECT COALESCE(MAX(version), 0) FROM checkpoint_states WHERE name = ?", (location.name,)
            ).fetchone()
            version = int(last) + 1
            conn.execute(
                "INSERT INTO checkpoint_states (name, version, time, format, state) VALUES (?, ?, ?, ?, ?)",
                (location.name, version, now, self.policy.save_format, blob),
            )
            conn.execute(
                "DELETE FROM checkpoint_states WHERE name = ? AND version < ?",
                (location.name, version - self.policy.keep_history),
            )
        return version

    def load_checkpoint(
        self, name: str | os.PathLike[str], version: int | None = None
    ) -> CheckpointState | None:
        """The newest (or the given) version of ``name``, or None when there is none.

        Raises:
            ConfigurationError: a bad name. StoreError: the database failed, is not private, or a
                stored value cannot be decoded.
        """
        location = self._location(name)
        with open_store(location) as store:
            with store.transaction() as conn:
                header = conn.execute(
                    "SELECT kind, n_items, info, updated FROM checkpoints WHERE name = ?", (location.name,)
                ).fetchone()
                if header is None:
                    return None
                if header[0] == "run":
                    rows = conn.execute(
                        "SELECT start, results FROM checkpoint_results WHERE name = ? ORDER BY start",
                        (location.name,),
                    ).fetchall()
                    return _state_of_run(store, header, rows)
                query = "SELECT format, state FROM checkpoint_states WHERE name = ?"
                params: tuple[Any, ...] = (location.name,)
                if version is not None:
                    query += " AND version = ?"
                    params += (version,)
                row = conn.execute(query + " ORDER BY version DESC LIMIT 1", params).fetchone()
            if row is None:
                return None
            fmt, blob = row
            fields = json.loads(bytes(blob).decode()) if fmt == _JSON else loads(blob, store)
        return CheckpointState(**fields)

    def delete_checkpoint(self, name: str | os.PathLike[str]) -> bool:
        """Delete every version of ``name`` (a run's checkpoint too).

        Returns:
            True when there was something to delete.
        """
        location = self._location(name)
        with open_store(location) as store, store.transaction() as conn:
            return _delete(conn, location.name)

    def list_checkpoints(self) -> list[str]:
        """Names of the checkpoints in the policy's database (runs' and saved states), sorted."""
        directory = self.policy.checkpoint_dir
        database = (
            None if directory is None else Path(os.fspath(directory)).expanduser().absolute() / DATABASE_NAME
        )
        with open_store(Location(database, "")) as store, store.transaction() as conn:
            return [row[0] for row in conn.execute("SELECT name FROM checkpoints ORDER BY name")]

    def due(self, n_done: int) -> bool:
        """Whether a loop that finished ``n_done`` items should save now (every ``checkpoint_interval``)."""
        return n_done > 0 and n_done % self.policy.checkpoint_interval == 0

    def complete(self, name: str | os.PathLike[str]) -> bool:
        """The job is done: delete its checkpoint when the policy's ``auto_cleanup`` is on.

        Returns:
            True when a checkpoint was deleted.
        """
        return self.delete_checkpoint(name) if self.policy.auto_cleanup else False


def _state_of_run(store: Store, header: Sequence[Any], rows: Sequence[Sequence[Any]]) -> CheckpointState:
    _, n_items, info, updated = header
    indices: list[int] = []
    results: list[Any] = []
    for start, blob in rows:
        values = loads(blob, store)
        indices.extend(range(start, start + len(values)))
        results.extend(values)
    plan = json.loads(info).get("plan") or {}
    total = n_items if n_items is not None else (max(indices) + 1 if indices else 0)
    return CheckpointState(
        completed_indices=indices,
        results=results,
        total_items=total,
        checkpoint_time=float(updated),
        n_jobs=int(plan.get("n_jobs", 1)),
        chunksize=int(plan.get("chunksize", 1)),
        metadata={"kind": "run", "plan": plan},
    )


def get_pending_items(data: Iterable[Any], state: CheckpointState) -> tuple[list[int], list[Any]]:
    """The positions and items of ``data`` that ``state`` has no result for.

    Returns:
        ``(pending_indices, pending_items)``, in input order.

    Example:
        >>> state = CheckpointState([1], ["B"], total_items=3, checkpoint_time=0.0)
        >>> get_pending_items("abc", state)
        ([0, 2], ['a', 'c'])
    """
    done = set(state.completed_indices)
    indices: list[int] = []
    items: list[Any] = []
    for position, item in enumerate(data):
        if position not in done:
            indices.append(position)
            items.append(item)
    return indices, items


def merge_results(
    new_results: Sequence[Any], pending_indices: Sequence[int], state: CheckpointState, total_items: int
) -> list[Any]:
    """All results in input order: ``state``'s, and ``new_results`` at ``pending_indices``.

    Raises:
        ConfigurationError: ``new_results`` and ``pending_indices`` differ in length, a position is out
            of range, or some position has no result (the first few are named).

    Example:
        >>> state = CheckpointState([1], ["B"], total_items=3, checkpoint_time=0.0)
        >>> merge_results(["A", "C"], [0, 2], state, 3)
        ['A', 'B', 'C']
    """
    if len(new_results) != len(pending_indices):
        raise ConfigurationError(
            f"merge_results needs one new result per pending index (got {len(new_results)} results for "
            f"{len(pending_indices)} indices)"
        )
    missing = object()
    merged: list[Any] = [missing] * total_items
    for source in ((state.completed_indices, state.results), (pending_indices, new_results)):
        for position, result in zip(*source, strict=True):
            if not 0 <= position < total_items:
                raise ConfigurationError(
                    f"position {position} is outside the {total_items} items given as total_items"
                )
            merged[position] = result
    holes = [position for position, value in enumerate(merged) if value is missing]
    if holes:
        raise ConfigurationError(
            f"{len(holes)} positions have no result (first: {holes[:10]}); run the pending items "
            "from get_pending_items and pass all their results"
        )
    return merged
