"""Tests for ``amorsize._native``: the guard before OpenBLAS's pool is shut down.

The shutdown itself is tested where it is used (``tests/test_api.py``, ``tests/measure``), the
count of thread-backend chunks in ``tests/run/test_backends.py``.
"""

from __future__ import annotations

import threading

import pytest

from amorsize import _native
from amorsize._native import only_caller_runs_user_code


class TestOnlyCallerRunsUserCode:
    """``only_caller_runs_user_code``: the guard before a BLAS thread pool is shut down."""

    def test_user_code_running_in_an_amorsize_thread_counts(self) -> None:
        before = _native._running
        with _native.running_user_code():
            assert _native._running == before + 1 and not only_caller_runs_user_code()
        assert _native._running == before

    def test_asked_from_an_amorsize_thread(self) -> None:
        answers: list[bool] = []
        thread = threading.Thread(
            target=lambda: answers.append(only_caller_runs_user_code()), name="amorsize-thread:9"
        )
        thread.start()
        thread.join()
        assert answers == [False]

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
