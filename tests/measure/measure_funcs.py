"""Item functions for the measurement tests (importable by worker processes under every start method)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator


def cpu_spin(seconds: float) -> None:
    """Compute until this thread has used ``seconds`` of CPU: a fixed amount of work.

    Not "until the wall clock says so": the dry run leaves out the time a thread waits for a CPU
    (other processes running), and an item that ends by the wall clock would then read shorter.
    """
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


@contextlib.contextmanager
def busy_processes(count: int, cpu: int | None = None) -> Iterator[None]:
    """Run ``count`` processes that compute without end (on CPU ``cpu`` only, if given); kill them after."""
    pin = "" if cpu is None else f"import os; os.sched_setaffinity(0, {{{cpu}}})\n"
    hogs = [subprocess.Popen([sys.executable, "-S", "-c", pin + "while True: pass"]) for _ in range(count)]
    try:
        time.sleep(0.1)  # they are running
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait(timeout=10)
