"""Picklable functions for the resilience tests (importable by worker processes under every start method).

Cross-process state lives in files named by the items themselves, so nothing depends on when a
pooled worker was forked: an item is ``(calls_file, ..., x)`` and each call appends a line to
``calls_file`` (``O_APPEND`` writes of one short line are atomic on Linux and macOS).
"""

from __future__ import annotations

import os
import time
from typing import Any

from amorsize.resilience.retry import with_retry


class ServiceDown(ConnectionError):
    """The "service" is down."""


class BadRecord(ValueError):
    """An item that can never succeed."""


def append_line(path: str, text: str) -> None:
    """Append one line to ``path`` atomically."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{text}\n".encode())
    finally:
        os.close(fd)


def lines(path: str) -> list[str]:
    """The lines of ``path`` ([] when it does not exist)."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().splitlines()
    except FileNotFoundError:
        return []


def attempts(path: str, x: Any) -> int:
    """How many calls ``path`` records for item ``x``."""
    return lines(path).count(str(x))


def flaky(item: tuple[str, int, int]) -> int:
    """``(calls, fail_times, x)``: fail the first ``fail_times`` calls for ``x`` (ServiceDown), then x*10."""
    calls, fail_times, x = item
    append_line(calls, str(x))
    if attempts(calls, x) <= fail_times:
        raise ServiceDown(f"attempt {attempts(calls, x)} for {x}")
    return x * 10


def bad_when_negative(item: tuple[str, int]) -> int:
    """``(calls, x)``: BadRecord for a negative x (never retried), else x + 1."""
    calls, x = item
    append_line(calls, str(x))
    if x < 0:
        raise BadRecord(f"negative {x}")
    return x + 1


@with_retry(max_retries=2, initial_delay=0.0, jitter=False)
def decorated_flaky(item: tuple[str, int, int]) -> int:
    """:func:`flaky`, retried twice by a decorator at module level."""
    return flaky(item)


def service(item: tuple[str, str, int]) -> int:
    """``(calls, up_flag, x)``: a service that is up while ``up_flag`` exists; each call is counted."""
    calls, up_flag, x = item
    append_line(calls, str(x))
    time.sleep(0.005)
    if not os.path.exists(up_flag):
        raise ServiceDown(f"service down (item {x})")
    return x * 2


def stamped(item: tuple[str, int]) -> int:
    """``(times, x)``: record the call's ``time.monotonic()`` (system-wide on Linux), return x."""
    times, x = item
    append_line(times, repr(time.monotonic()))
    return x


def slow_square(item: tuple[str, int, float]) -> int:
    """``(calls, x, seconds)``: record the call, sleep, return x²."""
    calls, x, seconds = item
    append_line(calls, str(x))
    time.sleep(seconds)
    return x * x


def fail_on_flag(item: tuple[str, str, int, int]) -> int:
    """``(calls, flag, bad, x)``: record the call; while ``flag`` exists, item ``bad`` fails."""
    calls, flag, bad, x = item
    append_line(calls, str(x))
    if x == bad and os.path.exists(flag):
        raise BadRecord(f"item {x} fails while {flag} exists")
    return x * x
