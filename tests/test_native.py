"""Tests for ``amorsize._native``: the guard before OpenBLAS's pool is shut down, and the shutdown."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError

import pytest

from amorsize import _native
from amorsize._native import only_caller_runs_user_code
from amorsize.run.backend import ChunkTask, FunctionRef
from amorsize.run.backends.threads import ThreadBackend


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


class TestOnlyCallerRunsUserCode:
    """``only_caller_runs_user_code``: the guard before a BLAS thread pool is shut down."""

    @pytest.mark.timeout(30)
    def test_running_and_abandoned_thread_chunks_count(self) -> None:
        before = _native._running  # items abandoned by earlier tests may still be running
        release = threading.Event()
        seen: list[bool] = []

        def hold(x: int) -> int:
            seen.append(only_caller_runs_user_code())  # asked from an Amorsize worker thread
            release.wait(10)
            return x

        with ThreadBackend(1) as backend:
            future = backend.submit(ChunkTask(0, 0, [1], FunctionRef.local(hold)))
            assert wait_until(lambda: bool(seen))
            assert seen == [False]
            assert _native._running == before + 1 and not only_caller_runs_user_code()
            backend.abort()  # the thread is abandoned: its item runs on
            with pytest.raises(CancelledError):
                future.result(5)
            assert _native._running == before + 1 and not only_caller_runs_user_code()
            release.set()
            assert wait_until(lambda: _native._running <= before)  # the item returned
        main = threading.main_thread()
        if before == 0 and all(t is main or t.name.startswith("amorsize-") for t in threading.enumerate()):
            assert only_caller_runs_user_code()

    @pytest.mark.timeout(30)
    def test_a_thread_started_elsewhere_counts(self) -> None:
        release = threading.Event()
        other = threading.Thread(target=release.wait, name="user-thread", daemon=True)
        other.start()
        try:
            assert not only_caller_runs_user_code()
        finally:
            release.set()
            other.join()
