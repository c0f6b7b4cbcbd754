"""What the command line reads and writes: the user's function, the data, results as JSON lines."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import ModuleType
from typing import IO, Any

__all__ = ["UsageError", "dump_json", "load_function", "read_data", "write_results"]


class UsageError(Exception):
    """A mistake on the command line (an argument, a path, a FUNC that cannot be found): exit code 2."""


_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _import_file(path: Path, spec: str) -> ModuleType:
    """Import ``path`` as a module that worker processes can import too.

    It is imported under its own name (``tasks.py`` → ``tasks``) with its directory added at the end
    of ``sys.path`` (spawned workers inherit ``sys.path``), so functions pickle by reference under
    every start method. When another module already answers to that name (``json.py``) or it is not
    an identifier, a private name is used and cloudpickle ships the module's functions by value.
    """
    directory = str(path.resolve().parent)
    name = path.stem
    existing = sys.modules.get(name)
    if existing is not None and _same_file(existing, path):
        return existing
    if existing is None and _IDENTIFIER.match(name) and _free_or_ours(name, path):
        if directory not in sys.path:
            sys.path.append(directory)  # at the end: it must not shadow anything else
        module: ModuleType = _run_import(lambda: importlib.import_module(name), name, spec)
        if _same_file(module, path):
            return module
    # The name belongs to another module (``json.py``): load the file under a private name.
    name = f"amorsize_user_{re.sub(r'[^A-Za-z0-9_]', '_', path.stem)}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise UsageError(f"cannot import {str(path)!r} as a Python file (from FUNC {spec!r})")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    loader = module_spec.loader
    _run_import(lambda: loader.exec_module(module), name, spec)
    import cloudpickle

    cloudpickle.register_pickle_by_value(module)
    return module


def _free_or_ours(name: str, path: Path) -> bool:
    """True when no other module is importable as ``name`` (so importing the file by it shadows nothing)."""
    try:
        found = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return False
    return found is None or (found.origin is not None and Path(found.origin).resolve() == path.resolve())


def _same_file(module: ModuleType, path: Path) -> bool:
    source = getattr(module, "__file__", None)
    return source is not None and Path(source).resolve() == path.resolve()


def _run_import(action: Callable[[], Any], name: str, spec: str) -> Any:
    """Run an import, turning whatever the user's module raises into one line."""
    try:
        return action()
    except SyntaxError as error:
        where = f"{error.filename}, line {error.lineno}" if error.filename else f"line {error.lineno}"
        raise UsageError(
            f"cannot import {name!r} (from FUNC {spec!r}): syntax error at {where}: {error.msg}"
        ) from error
    except Exception as error:
        raise UsageError(
            f"importing {name!r} (from FUNC {spec!r}) raised {type(error).__name__}: {error}"
        ) from error


def _import_module(module_name: str, spec: str) -> ModuleType | None:
    """The module, or None when no module of that name exists (a missing dependency inside it is an error)."""
    try:
        module: ModuleType = _run_import(lambda: importlib.import_module(module_name), module_name, spec)
    except UsageError as error:
        cause = error.__cause__
        missing = cause.name if isinstance(cause, ModuleNotFoundError) else None
        if missing is not None and (module_name == missing or module_name.startswith(missing + ".")):
            return None
        raise
    return module


def load_function(spec: str) -> Callable[[Any], Any]:
    """Resolve ``package.module.func``, ``package.module:func`` or ``path/to/file.py:func``.

    Nested names work too: ``package.module:Class.method``, ``package.module.Class.method``.

    Args:
        spec: where the function lives.

    Returns:
        The callable.

    Raises:
        UsageError: it cannot be found or is not callable (the message says what was tried), or
            importing its module raised.

    Example:
        >>> load_function("math.factorial")(5)
        120
        >>> load_function("os.path:join")("a", "b") == __import__("os").path.join("a", "b")
        True
    """
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.append("")  # modules in the working directory are importable (after everything else)
    module: Any
    if ":" in spec:
        where, _, name = spec.rpartition(":")
        if not name:
            raise UsageError(f"FUNC {spec!r} names no function after ':'")
        if where.endswith(".py") or "/" in where or "\\" in where:
            path = Path(where)
            if not path.is_file():
                raise UsageError(f"no such file {where!r} (from FUNC {spec!r})")
            module, module_name = _import_file(path, spec), f"file {where!r}"
        else:
            module_name = f"module {where!r}"
            module = _import_module(where, spec)
            if module is None:
                raise UsageError(
                    f"cannot import module {where!r} (from FUNC {spec!r}): no module named {where!r}"
                )
    else:
        parts = spec.split(".")
        if len(parts) < 2 or not all(parts):
            raise UsageError(
                f"FUNC must look like package.module.func, package.module:func or file.py:func (got {spec!r})"
            )
        module = None
        for cut in range(len(parts) - 1, 0, -1):
            module = _import_module(".".join(parts[:cut]), spec)
            if module is not None:
                module_name = f"module {'.'.join(parts[:cut])!r}"
                name = ".".join(parts[cut:])
                break
        if module is None:
            raise UsageError(f"cannot import module {'.'.join(parts[:-1])!r} (from FUNC {spec!r})")
    func: Any = module
    for part in name.split("."):
        try:
            func = getattr(func, part)
        except AttributeError:
            raise UsageError(f"{module_name} has no attribute {name!r} (from FUNC {spec!r})") from None
    if not callable(func):
        raise UsageError(f"FUNC {spec!r} is not a function (it is a {type(func).__name__} object)")
    return func  # type: ignore[no-any-return]


def _lines(source: str, option: str, stdin: IO[str]) -> Iterator[str]:
    if source == "-":
        yield from stdin
        return
    path = Path(source)
    if not path.exists():
        raise UsageError(f"{option}: no such file {source!r}")
    if path.is_dir():
        raise UsageError(f"{option}: {source!r} is a directory, not a file")
    try:
        with path.open(encoding="utf-8") as lines:
            yield from lines
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"{option}: cannot read {source!r}: {error}") from None


def _jsonl(source: str, stdin: IO[str]) -> list[Any]:
    items = []
    for number, line in enumerate(_lines(source, "--data-jsonl", stdin), 1):
        if line.strip():
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise UsageError(
                    f"--data-jsonl: line {number} of {source!r} is not JSON: {error.msg}"
                ) from None
    return items


def read_data(
    *,
    data_range: int | None,
    data_file: str | None,
    data_jsonl: str | None,
    stdin: IO[str] | None = None,
) -> Iterable[Any]:
    """The items to run over, from the one source given (or standard input when none is and it is piped).

    Args:
        data_range: ``--data-range N``: the integers 0 … N-1.
        data_file: ``--data-file PATH``: one item (a string, newline removed) per line; ``-`` is stdin.
        data_jsonl: ``--data-jsonl PATH``: one JSON value per line (blank lines skipped); ``-`` is stdin.
        stdin: standard input (default ``sys.stdin``): lines as strings, when it is not a terminal
            (empty standard input with no source given is an error: most likely a forgotten option).

    Returns:
        A range or a list.

    Raises:
        UsageError: the source is missing or unreadable, or no source was given.
    """
    stdin = sys.stdin if stdin is None else stdin
    if data_range is not None:
        if data_range < 0:
            raise UsageError(f"--data-range must be >= 0 (got {data_range})")
        return range(data_range)
    if data_file is not None:
        return [line.rstrip("\r\n") for line in _lines(data_file, "--data-file", stdin)]
    if data_jsonl is not None:
        return _jsonl(data_jsonl, stdin)
    if stdin is not None and not stdin.isatty():
        items = [line.rstrip("\r\n") for line in stdin]
        if items:
            return items
        raise UsageError(
            "no data: standard input was empty; give --data-range N, --data-file PATH or --data-jsonl PATH, "
            "or pipe lines in"
        )
    raise UsageError("no data: give --data-range N, --data-file PATH, --data-jsonl PATH or pipe lines in")


def _json_default(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    return repr(value)


def dump_json(value: Any) -> str:
    """One line of JSON; values JSON cannot hold are written as their ``repr`` (sets as lists)."""
    return json.dumps(value, default=_json_default, ensure_ascii=False)


def write_results(results: Iterable[Any], path: str | None, stdout: IO[str]) -> int:
    """Write results as JSON lines to ``path`` (``-`` or None: ``stdout``).

    Returns:
        How many lines were written.

    Raises:
        UsageError: the file cannot be written.
    """
    count = 0
    if path is None or path == "-":
        for value in results:
            stdout.write(dump_json(value) + "\n")
            count += 1
        return count
    try:
        with open(path, "w", encoding="utf-8") as out:
            for value in results:
                out.write(dump_json(value) + "\n")
                count += 1
    except OSError as error:
        raise UsageError(f"--output: cannot write {path!r}: {error.strerror or error}") from None
    return count
