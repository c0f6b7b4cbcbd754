"""Test-wide settings: every test session gets its own private Amorsize home (store, calibration)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


def run_python(code: str, env: dict[str, str] | None = None, timeout: float = 60) -> str:
    """Run ``code`` (dedented) in a fresh interpreter with this environment plus ``env``; return its stdout.

    For what a process must not have done before (imported a module, started a thread pool).
    A non-zero exit fails the test with the child's stderr.
    """
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture
def fresh_python() -> Callable[..., str]:
    """:func:`run_python`, for tests in any directory (each is its own import root)."""
    return run_python


#: Start of a fresh-interpreter script on OpenBLAS's helper thread: ``cpu_while_sleeping()`` is the
#: process's CPU over a 60 ms sleep (the helper spins ~100 ms after an uncapped multi-threaded call),
#: and ``a @ a`` is such a call.
OPENBLAS_SPIN_SCRIPT = """
import time
import numpy

def cpu_while_sleeping():
    started = time.process_time()
    time.sleep(0.06)
    return time.process_time() - started

a = numpy.ones((400, 400))
"""


@pytest.fixture
def openblas_script() -> Callable[[str], str]:
    """Prefix a script (dedented) with :data:`OPENBLAS_SPIN_SCRIPT`.

    Skips unless NumPy's OpenBLAS (pthreads) runs 2 or more threads.
    """
    pytest.importorskip("numpy")
    from threadpoolctl import threadpool_info

    openblas = [i for i in threadpool_info() if i["internal_api"] == "openblas"]
    if not openblas or openblas[0].get("threading_layer") != "pthreads" or openblas[0]["num_threads"] < 2:
        pytest.skip("needs OpenBLAS (pthreads) running 2 or more threads")
    return lambda body: OPENBLAS_SPIN_SCRIPT + textwrap.dedent(body)


@pytest.fixture(scope="session", autouse=True)
def _private_amorsize_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point AMORSIZE_HOME at a fresh directory so tests never touch the user's real store."""
    home = tmp_path_factory.mktemp("amorsize-home")
    old = os.environ.get("AMORSIZE_HOME")
    os.environ["AMORSIZE_HOME"] = str(home / "home")
    yield home / "home"
    if old is None:
        os.environ.pop("AMORSIZE_HOME", None)
    else:
        os.environ["AMORSIZE_HOME"] = old


@pytest.fixture(autouse=True)
def _ctrl_c_still_works() -> Iterator[None]:
    """Fail a test that leaves Ctrl-C handled otherwise than before it (and put the handler back).

    Once SIGINT is swallowed, every later Ctrl-C test waits for a KeyboardInterrupt that never
    comes: the culprit is named here instead of a cascade of timeouts elsewhere.
    """
    before = signal.getsignal(signal.SIGINT)
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, []) if hasattr(signal, "pthread_sigmask") else set()
    yield
    after = signal.getsignal(signal.SIGINT)
    if after is not before:
        signal.signal(signal.SIGINT, before)
        pytest.fail(f"the test left SIGINT handled by {after!r} (it was {before!r})")
    if hasattr(signal, "pthread_sigmask"):
        now = signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        if now != blocked:
            pytest.fail(f"the test left the main thread blocking {sorted(now - blocked)}")
