"""Picklable functions for backend tests (importable by worker processes under every start method).

Each takes one item. Items that steer the behaviour are small tuples or strings so the tests read
plainly: ``fail_on_odd(3)`` raises, ``behave(("sleep", 30))`` sleeps 30 s.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any


class ItemBoom(ValueError):
    """Raised by ``fail_on_odd``; a module-level class, so it unpickles in the parent."""


class Unpicklable(Exception):
    """An exception whose instances cannot be pickled (it holds a lock)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


class NeedsTwoArgs(Exception):
    """Pickles, but cannot be unpickled (``__init__`` needs two arguments, ``args`` holds one)."""

    def __init__(self, a: str, b: str) -> None:
        super().__init__(f"{a}/{b}")


def square(x: int) -> int:
    """x²."""
    return x * x


def fail_on_odd(x: int) -> int:
    """x, or ItemBoom when x is odd."""
    if x % 2:
        raise ItemBoom(f"odd item {x}")
    return x


def pid_of(_: Any) -> int:
    """The pid of the process running the item."""
    return os.getpid()


def behave(item: Any) -> Any:
    """Do what the item says.

    - ``("sleep", s)``: sleep s seconds, return s.
    - ``("kill", _)``: SIGKILL this process.
    - ``("exit", code)``: ``os._exit(code)``.
    - ``("lock", _)``: return a lock (cannot be pickled).
    - ``("lambda", v)``: return a lambda (plain pickle fails, cloudpickle works).
    - ``("unpicklable-error", _)``: raise an exception that cannot be pickled.
    - ``("two-args-error", _)``: raise an exception that cannot be unpickled.
    - ``("system-exit", code)``: ``sys.exit(code)``.
    - anything else: returned unchanged.
    """
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
        what, value = item
        if what == "sleep":
            time.sleep(value)
            return value
        if what == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(10)
        if what == "exit":
            os._exit(value)
        if what == "lock":
            return threading.Lock()
        if what == "lambda":
            return lambda: value
        if what == "unpicklable-error":
            raise Unpicklable("cannot travel")
        if what == "two-args-error":
            raise NeedsTwoArgs("a", "b")
        if what == "system-exit":
            raise SystemExit(value)
    return item


def blas_threads(_: Any) -> int:
    """The largest ``num_threads`` threadpoolctl reports for a BLAS library, after importing numpy."""
    import numpy as np
    import threadpoolctl

    np.ones((4, 4)) @ np.ones((4, 4))
    infos = [i for i in threadpoolctl.threadpool_info() if i.get("user_api") == "blas"]
    return max(int(i["num_threads"]) for i in infos)


def cpu_while_sleeping(seconds: float) -> float:
    """CPU seconds this whole process (all its threads) used while the calling thread slept."""
    started = time.process_time()
    time.sleep(seconds)
    return time.process_time() - started


def blas_product(_: Any) -> float:
    """One element of a 64 × 64 product of ones, computed by numpy's BLAS (64.0 when it works)."""
    import numpy as np

    return float((np.ones((64, 64)) @ np.ones((64, 64)))[0, 0])


def _loaded_from(path: str) -> Any:
    """Record one unpickling of the function in ``path``; return the function (``square``)."""
    with open(path, "a") as record:
        record.write(f"{os.getpid()}\n")
    return square


class CountedLoads:
    """A function that appends a line to a file each time it is unpickled (to count transfers)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __call__(self, x: int) -> int:
        return square(x)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_loaded_from, (self.path,))
