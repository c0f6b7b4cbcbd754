"""Tests for ``amorsize._native``: the guard before OpenBLAS's pool is shut down.

The shutdown itself is tested where it is used (``tests/test_api.py``, ``tests/measure``), the
count of thread-backend chunks in ``tests/run/test_backends.py``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import pytest

from amorsize import _native
from amorsize._native import only_caller_runs_user_code


class TestOnlyCallerRunsUserCode:
    """``only_caller_runs_user_code``: the guard before a BLAS thread pool is shut down."""

    def test_user_code_running_in_an_amorsize_thread_counts(self) -> None:
        before = _native.RUNNING_USER_CODE.count
        with _native.RUNNING_USER_CODE:
            assert _native.RUNNING_USER_CODE.count == before + 1 and not only_caller_runs_user_code()
        assert _native.RUNNING_USER_CODE.count == before

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

    @pytest.mark.timeout(60)
    def test_every_thread_amorsize_leaves_behind_is_known(self, fresh_python: Callable[..., str]) -> None:
        # after runs on each backend and their history writes, only Amorsize's own threads are
        # left; one missing from the list (the store's writer was) kept OpenBLAS's helper spinning
        out = fresh_python(
            """
            import threading
            from amorsize import execute
            from amorsize._native import only_caller_runs_user_code
            from amorsize.store import flush_deferred

            for executor in ("serial", "threads", "processes"):
                execute(abs, range(-50, 50), executor=executor, n_jobs=2, chunksize=10)
            flush_deferred()
            names = sorted(t.name for t in threading.enumerate() if t is not threading.current_thread())
            print(only_caller_runs_user_code(), names)
            """
        )
        assert out.startswith("True "), out


class TestBlasLibrariesMapped:
    """``blas_libraries_mapped``: a read of ``/proc/self/maps`` instead of threadpoolctl's import and scan."""

    @pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="Linux only")
    @pytest.mark.timeout(60)
    def test_without_a_blas_library_threadpoolctl_is_not_imported(
        self, fresh_python: Callable[..., str]
    ) -> None:
        out = fresh_python(
            """
            import sys
            from amorsize._native import blas_above, blas_libraries_mapped
            print(blas_libraries_mapped(), blas_above(1), "threadpoolctl" in sys.modules)
            """
        )
        assert out.split() == ["False", "None", "False"], out

    @pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="Linux only")
    def test_every_library_threadpoolctl_finds_is_matched(self) -> None:
        pytest.importorskip("numpy")  # loads OpenBLAS (or MKL)
        from threadpoolctl import ThreadpoolController

        paths = [lib.filepath for lib in ThreadpoolController().lib_controllers]
        assert paths, "NumPy loaded no BLAS library threadpoolctl knows"
        assert _native.blas_libraries_mapped() is True
        for path in paths:  # as a line of /proc/self/maps ends
            assert _native._MAPPED_BLAS.search(f"7f00-7f01 r-xp 0 08:01 1 {path}\n".encode()), path

    def test_other_libraries_do_not_match(self) -> None:
        lines = b"".join(
            f"7f00-7f01 r-xp 0 08:01 1 /usr/lib/{name}\n".encode()
            for name in ("libc.so.6", "libpython3.11.so", "libssl.so.3", "libgompish/x.so", "libm.so.6")
        )
        assert _native._MAPPED_BLAS.search(lines) is None

    def test_unreadable_maps_mean_unknown(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(_native, "_MAPS", "/nonexistent/maps")
        assert _native.blas_libraries_mapped() is None


class TestBlasController:
    """``blas_controller``: one scan, kept until a shared object is loaded or unloaded."""

    @pytest.mark.skipif(_native._load_counts() is None, reason="no dl_iterate_phdr load counts here")
    @pytest.mark.timeout(60)
    def test_a_library_loaded_later_is_found(self, fresh_python: Callable[..., str]) -> None:
        pytest.importorskip("numpy")
        out = fresh_python(
            """
            from amorsize import _native
            before, counts = _native.blas_controller(), _native._load_counts()
            import numpy  # loads OpenBLAS (or MKL): the kept "none" must not be believed
            after = _native.blas_controller()
            print(before is None, after is not None, _native._load_counts() > counts)
            """
        )
        assert out.split() == ["True", "True", "True"], out

    @pytest.mark.skipif(_native._load_counts() is None, reason="no dl_iterate_phdr load counts here")
    def test_the_scan_is_made_once(self, monkeypatch: pytest.MonkeyPatch) -> None:
        pytest.importorskip("numpy")
        first = _native.blas_controller()
        assert first is not None

        def scan_again() -> bool:
            raise AssertionError("scanned again although no library was loaded")

        monkeypatch.setattr(_native, "blas_libraries_mapped", scan_again)
        assert _native.blas_controller() is first
        assert _native.blas_above(10_000) is None and _native.blas_above(0) is first
