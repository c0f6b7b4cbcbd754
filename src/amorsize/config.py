"""Saved plans: write a decision to a small JSON file, read it back later (or on another machine).

A config records the plan (executor, workers, chunk size, target chunk duration), what was predicted,
the machine it was measured on and the library version. It is JSON, versioned and meant to be read
and edited by people; loading never evaluates or unpickles anything. Loading it on a machine other
than the one it was measured on warns (:class:`ConfigMachineWarning`): the plan may not fit there.

::

    result = optimize(func, data)                 amorsize optimize mod.func --data-range 1000 \\
    result.save_config("plan.json", ...)   ──►        --save-config plan.json
    config = load_config("plan.json")      ──►    amorsize execute mod.func --data-range 10000 \\
    execute(func, data, **config.execute_options())   --load-config plan.json   (no dry run)

Example:
    >>> import pathlib, tempfile
    >>> from amorsize import optimize
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = pathlib.Path(tmp) / "plan.json"
    ...     _ = optimize(abs, range(100)).save_config(path, function_name="abs")
    ...     config = load_config(path)
    >>> config.executor, config.n_jobs, config.function_name
    ('serial', 1, 'abs')
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import sys
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol, cast

from amorsize.core.types import ExecutorKind, Machine
from amorsize.errors import ConfigurationError

__all__ = [
    "CONFIG_FORMAT",
    "CONFIG_VERSION",
    "ConfigMachine",
    "ConfigMachineWarning",
    "SavedConfig",
    "load_config",
    "save_config",
]

#: The value of the ``"format"`` key that marks a file as an Amorsize config.
CONFIG_FORMAT = "amorsize-config"

#: The config layout this code writes and reads. Bump it (and keep reading the old one) when a key
#: changes meaning; adding an optional key does not need a bump.
CONFIG_VERSION = 1

#: Executors a saved plan may name: the ones ``execute`` runs locally.
_EXECUTORS: tuple[ExecutorKind, ...] = ("serial", "threads", "processes")

#: Keys of the top level of a config file. Anything else is rejected: in a hand-edited file an unknown
#: key is almost always a typo (``n_job``) that would otherwise be silently ignored.
_KEYS = frozenset(
    {
        "format",
        "version",
        "function",
        "executor",
        "n_jobs",
        "chunksize",
        "target_chunk_duration",
        "blas_threads",
        "predicted",
        "machine",
        "amorsize_version",
        "created",
        "comment",
    }
)

_MACHINE_KEYS = (
    "key",
    "usable_cores",
    "physical_cores",
    "logical_cores",
    "start_method",
    "platform",
    "python",
)


class ConfigMachineWarning(UserWarning):
    """A config is being used on a machine other than the one it was measured on."""


class _PlanLike(Protocol):
    """Anything with a plan: an OptimizationResult, a tuning result, a SavedConfig."""

    @property
    def executor(self) -> str: ...

    @property
    def n_jobs(self) -> int: ...

    @property
    def chunksize(self) -> int: ...


@dataclass(frozen=True)
class ConfigMachine:
    """The machine a config was measured on.

    Attributes:
        key: the machine's calibration key without its version prefix (host, OS and architecture,
            Python, CPU model, usable cores, start method; see ``amorsize.measure.machine.machine_key``).
        usable_cores: cores the measuring process could use.
        physical_cores: physical cores (capped at the usable ones).
        logical_cores: ``os.cpu_count()``.
        start_method: the multiprocessing start method planned for.
        platform: ``sys.platform`` and the architecture, e.g. ``"linux-x86_64"``.
        python: implementation and version, e.g. ``"CPython-3.11.7"``.
    """

    key: str
    usable_cores: int
    physical_cores: int
    logical_cores: int
    start_method: str
    platform: str
    python: str

    @classmethod
    def current(cls, machine: Machine | None = None, *, start_method: str | None = None) -> ConfigMachine:
        """Describe this machine (using ``machine``'s figures when given, else a quick probe).

        Args:
            machine: the probed machine of a decision, if there is one.
            start_method: the start method to describe when ``machine`` is None.

        Returns:
            The description.
        """
        from amorsize.measure.machine import (
            default_start_method,
            machine_key,
            physical_cores,
            usable_cores,
        )

        if machine is None:
            usable = usable_cores()
            method = default_start_method(start_method)
            physical = min(physical_cores(), usable)
            logical = os.cpu_count() or 1
        else:
            usable, method = machine.usable_cores, machine.start_method
            physical, logical = machine.physical_cores, machine.logical_cores
        return cls(
            key=_strip_version(machine_key(method)),
            usable_cores=usable,
            physical_cores=physical,
            logical_cores=logical,
            start_method=method,
            platform=f"{sys.platform}-{platform.machine()}",
            python=f"{platform.python_implementation()}-{platform.python_version()}",
        )

    def describe(self) -> str:
        """One line for people, e.g. ``2 usable cores, fork, linux-x86_64, CPython-3.11.7``."""
        return f"{self.usable_cores} usable cores, {self.start_method}, {self.platform}, {self.python}"

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {name: getattr(self, name) for name in _MACHINE_KEYS}


def _strip_version(key: str) -> str:
    """``machine_key`` without its leading ``v<N>|`` (a calibration-format bump is not a new machine)."""
    return re.sub(r"^v\d+\|", "", key)


@dataclass(frozen=True)
class SavedConfig:
    """A plan read from (or about to be written to) a config file.

    Attributes:
        executor: ``"serial"``, ``"threads"`` or ``"processes"``.
        n_jobs: workers (1 for serial).
        chunksize: items per chunk.
        target_chunk_duration: seconds a chunk should take (the run adapts chunk sizes towards it).
        blas_threads: BLAS/OpenMP threads per process worker, when the plan fixed them (``tune``).
        function_name: the function the plan was made for, when known (informative only).
        predicted: what the planner predicted, e.g. ``estimated_speedup`` and ``reason`` (informative).
        machine: the machine it was measured on, or None when the file does not say.
        amorsize_version: the library version that wrote it.
        created: when it was written (ISO 8601, UTC).
        comment: free text for people.
        path: the file it was loaded from (None when not loaded from a file).

    Example:
        >>> config = SavedConfig("processes", 4, 25)
        >>> config.execute_options()
        {'executor': 'processes', 'n_jobs': 4, 'chunksize': 25, 'target_chunk_duration': 0.2}
    """

    executor: ExecutorKind
    n_jobs: int
    chunksize: int
    target_chunk_duration: float = 0.2
    blas_threads: int | None = None
    function_name: str | None = None
    predicted: Mapping[str, Any] = field(default_factory=dict)
    machine: ConfigMachine | None = None
    amorsize_version: str = ""
    created: str = ""
    comment: str = ""
    path: Path | None = field(default=None, compare=False)

    def execute_options(self) -> dict[str, Any]:
        """The keyword arguments that make ``execute``/``imap`` run this plan without a dry run."""
        options: dict[str, Any] = {
            "executor": self.executor,
            "n_jobs": self.n_jobs,
            "chunksize": self.chunksize,
            "target_chunk_duration": self.target_chunk_duration,
        }
        if self.blas_threads is not None:
            options["blas_threads"] = self.blas_threads
        return options

    def to_dict(self) -> dict[str, Any]:
        """The JSON form written by :func:`save_config` (keys in the order people read them)."""
        out: dict[str, Any] = {
            "format": CONFIG_FORMAT,
            "version": CONFIG_VERSION,
            "function": self.function_name,
            "executor": self.executor,
            "n_jobs": self.n_jobs,
            "chunksize": self.chunksize,
            "target_chunk_duration": self.target_chunk_duration,
            "blas_threads": self.blas_threads,
            "predicted": dict(self.predicted),
            "machine": None if self.machine is None else self.machine.to_dict(),
            "amorsize_version": self.amorsize_version,
            "created": self.created,
        }
        if self.comment:
            out["comment"] = self.comment
        return out

    def __str__(self) -> str:
        plan = "serial" if self.executor == "serial" else f"{self.executor} × {self.n_jobs}"
        where = f" from {self.path}" if self.path is not None else ""
        made = f" measured on {self.machine.describe()}" if self.machine is not None else ""
        return f"saved plan{where}: {plan}, chunks of {self.chunksize}{made}"


def _number(value: Any) -> float | None:
    """A finite float, or None (JSON has no NaN or infinity)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def save_config(
    source: _PlanLike,
    path: str | os.PathLike[str],
    *,
    function_name: str | None = None,
    target_chunk_duration: float | None = None,
    machine: Machine | None = None,
    comment: str = "",
) -> SavedConfig:
    """Write the plan of ``source`` to ``path`` as a JSON config (atomically: a crash leaves no half file).

    Args:
        source: an :class:`~amorsize.results.OptimizationResult`, a tuning result, or a
            :class:`SavedConfig` — anything with ``executor``, ``n_jobs`` and ``chunksize``.
        path: the file to write (its directory must exist).
        function_name: the function the plan is for (recorded for people; not checked on load).
        target_chunk_duration: the target the plan was made with (default: the source's, else 0.2 s).
        machine: the probed machine of the decision (default: a quick look at this machine).
        comment: free text to keep in the file.

    Returns:
        What was written.

    Raises:
        ConfigurationError: the plan is invalid, or the file cannot be written.
    """
    from amorsize import __version__

    predicted: dict[str, Any] = {}
    for name in ("estimated_speedup", "predicted_serial_time", "predicted_parallel_time", "best_seconds"):
        value = _number(getattr(source, name, None))
        if value is not None:
            predicted[name] = value
    duration: float = target_chunk_duration or getattr(source, "target_chunk_duration", None) or 0.2
    reason = getattr(source, "reason", None)
    if isinstance(reason, str) and reason:
        predicted["reason"] = reason
    config = SavedConfig(
        executor=cast(ExecutorKind, source.executor),
        n_jobs=source.n_jobs,
        chunksize=source.chunksize,
        target_chunk_duration=float(duration),
        blas_threads=getattr(source, "blas_threads", None),
        function_name=function_name,
        predicted=predicted,
        machine=ConfigMachine.current(machine),
        amorsize_version=__version__,
        created=datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        comment=comment,
    )
    _parse(config.to_dict(), Path(path))  # never write a file that load_config would refuse
    target = Path(path)
    text = json.dumps(config.to_dict(), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except OSError as error:
        raise ConfigurationError(
            f"cannot write the config {str(target)!r}: {error.strerror or error}"
        ) from error
    return replace(config, path=target)


def load_config(path: str | os.PathLike[str], *, check_machine: bool = True) -> SavedConfig:
    """Read a config written by :func:`save_config` (or by hand), checking every value.

    Args:
        path: the JSON file.
        check_machine: warn (:class:`ConfigMachineWarning`) when it was measured on another machine.

    Returns:
        The :class:`SavedConfig`; ``config.n_jobs``, ``config.chunksize``, ``config.execute_options()``.

    Raises:
        ConfigurationError: the file is missing, not JSON, not an Amorsize config, written by a newer
            version, or holds a bad value — the message names the file and the problem.
    """
    target = Path(path)
    try:
        text = target.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigurationError(f"config {str(target)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigurationError(f"cannot read config {str(target)!r}: {error}") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigurationError(
            f"config {str(target)!r} is not valid JSON: {error.msg} "
            f"at line {error.lineno}, column {error.colno}"
        ) from None
    config = _parse(raw, target)
    if check_machine and config.machine is not None:
        _warn_if_other_machine(config, target)
    return config


def _parse(raw: Any, path: Path) -> SavedConfig:
    """Check a decoded config and build the :class:`SavedConfig`."""

    def bad(problem: str) -> ConfigurationError:
        return ConfigurationError(f"config {str(path)!r}: {problem}")

    if not isinstance(raw, dict):
        raise bad(f"expected a JSON object at the top level, found {type(raw).__name__}")
    if raw.get("format") != CONFIG_FORMAT:
        raise bad(f'not an Amorsize config (expected "format": "{CONFIG_FORMAT}")')
    version = raw.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise bad(f'"version" must be an integer (got {version!r})')
    if version > CONFIG_VERSION:
        raise bad(
            f"written by a newer Amorsize (config version {version}; this one reads up to {CONFIG_VERSION}); "
            "upgrade amorsize or save the config again"
        )
    if version < 1:
        raise bad(f"config version {version} is not supported; save the config again")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise bad(f"unknown key {unknown[0]!r} (known keys: {', '.join(sorted(_KEYS))})")
    executor = raw.get("executor")
    if executor not in _EXECUTORS:
        raise bad(f'"executor" must be one of {", ".join(map(repr, _EXECUTORS))} (got {executor!r})')
    counts = {}
    for name in ("n_jobs", "chunksize"):
        value = raw.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise bad(f'"{name}" must be an integer >= 1 (got {value!r})')
        counts[name] = value
    duration = raw.get("target_chunk_duration", 0.2)
    if _number(duration) is None or duration <= 0:
        raise bad(f'"target_chunk_duration" must be a positive number of seconds (got {duration!r})')
    blas_threads = raw.get("blas_threads")
    if blas_threads is not None and (
        isinstance(blas_threads, bool) or not isinstance(blas_threads, int) or blas_threads < 1
    ):
        raise bad(f'"blas_threads" must be an integer >= 1 or null (got {blas_threads!r})')
    strings = {}
    for name in ("function", "amorsize_version", "created", "comment"):
        value = raw.get(name)
        if value is not None and not isinstance(value, str):
            raise bad(f'"{name}" must be a string (got {value!r})')
        strings[name] = value
    predicted = raw.get("predicted", {})
    if predicted is None:
        predicted = {}
    if not isinstance(predicted, dict):
        raise bad(f'"predicted" must be an object (got {predicted!r})')
    return SavedConfig(
        executor=cast(ExecutorKind, executor),
        n_jobs=1 if executor == "serial" else counts["n_jobs"],
        chunksize=counts["chunksize"],
        target_chunk_duration=float(duration),
        blas_threads=blas_threads,
        function_name=strings["function"],
        predicted=predicted,
        machine=_parse_machine(raw.get("machine"), bad),
        amorsize_version=strings["amorsize_version"] or "",
        created=strings["created"] or "",
        comment=strings["comment"] or "",
        path=path,
    )


def _parse_machine(raw: Any, bad: Any) -> ConfigMachine | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise bad(f'"machine" must be an object (got {raw!r})')
    values: dict[str, Any] = {}
    for name in _MACHINE_KEYS:
        value = raw.get(name)
        if name.endswith("_cores"):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad(f'"machine.{name}" must be an integer >= 1 (got {value!r})')
        elif not isinstance(value, str):
            raise bad(f'"machine.{name}" must be a string (got {value!r})')
        values[name] = value
    return ConfigMachine(**values)


def _warn_if_other_machine(config: SavedConfig, path: Path) -> None:
    assert config.machine is not None
    saved = config.machine
    here = ConfigMachine.current(start_method=saved.start_method)
    if saved.key == here.key:
        return
    advice = ""
    if config.n_jobs > here.usable_cores and config.executor != "threads":
        advice = f"; it asks for {config.n_jobs} workers but only {here.usable_cores} cores are usable here"
    there, mine = saved.describe(), here.describe()
    if there == mine:  # the host name or the CPU model differ: show the keys
        there, mine = saved.key, here.key
    warnings.warn(
        f"config {str(path)!r} was measured on another machine ({there}; this one: {mine}){advice}; "
        "its plan may not fit here — run `amorsize optimize … --save-config` again on this machine",
        ConfigMachineWarning,
        stacklevel=3,
    )
