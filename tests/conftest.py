"""Test-wide settings: every test session gets its own private Amorsize home (store, calibration)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


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
