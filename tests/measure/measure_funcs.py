"""Item functions for the measurement tests (importable by worker processes under every start method)."""

from __future__ import annotations

import time


def cpu_spin(seconds: float) -> None:
    """Compute until this thread has used ``seconds`` of CPU: a fixed amount of work.

    Not "until the wall clock says so": the dry run leaves out the time a thread waits for a CPU
    (other processes running), and an item that ends by the wall clock would then read shorter.
    """
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass
