"""Where checkpoints and dead letters live, and the checks made before anything pickled is read back.

Three kinds of location, all SQLite databases opened through :class:`~amorsize.store.Store` (WAL,
transactions, several processes at once):

- a *name* (``"nightly"``): the user's own store, ``amorsize_home()/amorsize.sqlite3``;
- a *directory* (``CheckpointPolicy.checkpoint_dir``, ``DLQPolicy.directory``): a store file
  ``<directory>/amorsize.sqlite3``, the directory created with mode 0700 when missing;
- a *file* (``checkpoint="./state/job.sqlite3"``): that file, created with mode 0600.

Pickles (results, items) are loaded only from a database file owned by the user and writable by no
one else, in a directory no one else can write to (or a sticky one like ``/tmp``, where others cannot
replace the user's files): :func:`verify_private` checks this right before every load.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amorsize.errors import ConfigurationError, StoreError
from amorsize.run._worker import dumps  # plain pickle, cloudpickle when that fails: as chunks ship
from amorsize.store import DATABASE_NAME, Store, _can_check_owner, _check_private, default_store

__all__ = [
    "DIGEST_SIZE",
    "Location",
    "dumps",
    "ensure_private_dir",
    "item_digest",
    "loads",
    "open_store",
    "resolve",
    "verify_private",
]

#: Bytes of an item digest (blake2b): 128 bits make an accidental match of two different items
#: negligible (~2⁻⁶⁴ after 2³² items), at 16 bytes per checkpointed item.
DIGEST_SIZE = 16

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH


@dataclass(frozen=True)
class Location:
    """Where one named checkpoint or queue lives.

    Attributes:
        database: the database file, or None for the user's default store.
        name: the name inside that database.
    """

    database: Path | None
    name: str

    def describe(self) -> str:
        """For messages: ``'nightly' in /home/me/.local/share/amorsize/amorsize.sqlite3``."""
        where = "the Amorsize store" if self.database is None else str(self.database)
        return f"{self.name!r} in {where}"


def check_name(name: str, what: str) -> str:
    """Return ``name`` if it is a valid checkpoint or queue name.

    Raises:
        ConfigurationError: it is not (letters, digits, ``.``, ``_``, ``-``; at most 200).
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigurationError(
            f"a {what} name must be 1-200 letters, digits, '.', '_' or '-', starting with a letter or "
            f"digit (got {name!r}); to use a file instead, pass a path containing '/'"
        )
    return name


def resolve(spec: str | os.PathLike[str], *, directory: str | os.PathLike[str] | None, what: str) -> Location:
    """Turn a checkpoint argument into a :class:`Location`.

    A ``PathLike`` or a string containing a path separator is a database file (the name inside is
    ``what``); any other string is a name, in ``directory``'s store when given, else the user's store.

    Raises:
        ConfigurationError: neither a valid name nor a path.
    """
    if isinstance(spec, os.PathLike) or (
        isinstance(spec, str) and (os.sep in spec or (os.altsep is not None and os.altsep in spec))
    ):
        path = Path(os.fspath(spec)).expanduser()
        if path.name in ("", ".", ".."):
            raise ConfigurationError(f"a {what} path must name a file (got {os.fspath(spec)!r})")
        return Location(path.absolute(), what)
    if not isinstance(spec, str):
        raise ConfigurationError(
            f"a {what} must be a name (str) or a path (str containing '/', or pathlib.Path); "
            f"got {type(spec).__name__}: {spec!r:.60}"
        )
    check_name(spec, what)
    if directory is None:
        return Location(None, spec)
    return Location(Path(os.fspath(directory)).expanduser().absolute() / DATABASE_NAME, spec)


def _check_dir(path: Path) -> None:
    """Refuse a directory where another user could replace our files.

    Safe: owned by us (or root) and writable by no one else, or sticky (``/tmp``: others cannot
    rename or delete what we own there).

    Raises:
        StoreError: it is not safe (the message says why and how to fix it).
    """
    if not _can_check_owner():
        return
    try:
        info = os.stat(path)
    except OSError as exc:
        raise StoreError(f"cannot inspect the directory {path}: {exc}") from exc
    if info.st_mode & stat.S_ISVTX:
        return
    problems = []
    if info.st_uid not in (os.getuid(), 0):
        problems.append(f"owned by uid {info.st_uid}, not by you (uid {os.getuid()}) or root")
    if info.st_mode & _OTHERS_WRITE:
        problems.append(f"writable by other users (mode {stat.S_IMODE(info.st_mode):o})")
    if problems:
        raise StoreError(
            f"refusing to keep pickled state in {path}: the directory is {' and '.join(problems)}, so "
            f"another user could replace the database; use a directory of your own (`chmod 700 {path}`)"
        )


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` (and missing parents) with mode 0700 when missing; refuse it if unsafe.

    Raises:
        StoreError: it cannot be created, is not a directory, or others can write to it.
    """
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=False)
        os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask: be exact
    except FileExistsError:
        if not path.is_dir():
            raise StoreError(f"{path} exists but is not a directory; choose another location") from None
    except OSError as exc:
        raise StoreError(f"cannot create the directory {path}: {exc}") from exc
    _check_dir(path)


@contextmanager
def open_store(location: Location) -> Iterator[Store]:
    """The store holding ``location``: the default store (left open), or its own file (closed after).

    Raises:
        StoreError: the location is not private or the database is unusable.
    """
    if location.database is None:
        yield default_store()
        return
    ensure_private_dir(location.database.parent)
    store = Store(location.database)
    try:
        yield store
    finally:
        store.close()


def verify_private(store: Store) -> None:
    """Check, right before loading a pickle, that no other user could have written ``store``.

    Raises:
        StoreError: the file or its directory is not private.
    """
    _check_private(store.path, "database file", "600")
    _check_dir(store.path.parent)


def loads(blob: bytes, store: Store) -> Any:
    """Unpickle ``blob`` read from ``store``, after :func:`verify_private`.

    Raises:
        StoreError: the store is not private, or ``blob`` cannot be unpickled here.
    """
    verify_private(store)
    try:
        return pickle.loads(blob)
    except Exception as exc:
        raise StoreError(
            f"cannot unpickle a value stored in {store.path} ({type(exc).__name__}: {exc}); is every "
            "class it uses importable here?"
        ) from exc


def item_digest(item: Any) -> bytes:
    """A digest of an item's pickle: the same item gives the same digest in every process.

    Items that cannot be pickled are digested by type and ``repr`` instead. Pickles that are not
    deterministic (sets of strings, whose order follows the per-process hash seed) differ between
    processes: such items read as changed on resume.
    """
    try:
        blob = dumps(item)
    except Exception:
        blob = f"{type(item).__module__}.{type(item).__qualname__}:{item!r}".encode()
    return hashlib.blake2b(blob, digest_size=DIGEST_SIZE).digest()
