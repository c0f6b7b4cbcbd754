"""Test-wide settings: every test session gets its own private Amorsize home (store, calibration)."""

from __future__ import annotations

import os
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
