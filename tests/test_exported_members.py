"""The package's public names: ``__all__`` is sorted and matches what ``__init__`` imports."""

from __future__ import annotations

import types

import amorsize


def test_all_is_sorted_and_unique() -> None:
    assert list(amorsize.__all__) == sorted(set(amorsize.__all__))


def test_all_matches_the_public_names() -> None:
    public = {
        name
        for name, value in vars(amorsize).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public | {"__version__"} == set(amorsize.__all__)


def test_seed_api_is_present() -> None:
    for name in ("optimize", "execute", "optimize_streaming", "process_in_batches", "imap"):
        assert callable(getattr(amorsize, name))
