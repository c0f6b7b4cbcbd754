"""Shared fixtures of the resilience tests; puts this directory on sys.path for worker processes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # spawned workers import resilience_funcs from here (they inherit sys.path)
    sys.path.insert(0, str(HERE))


@pytest.fixture
def calls(tmp_path: Path) -> str:
    """A file that worker functions append one line per call to."""
    return str(tmp_path / "calls.txt")


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """A private directory for databases (pytest's tmp_path is already mode 0700)."""
    path = tmp_path / "state"
    path.mkdir(mode=0o700)
    return path
