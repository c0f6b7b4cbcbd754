"""A base for objects whose ``with`` block ends with their ``close()`` (backends, pools, the store)."""

from __future__ import annotations

from types import TracebackType
from typing import TypeVar

__all__ = ["ClosingContext"]

_Self = TypeVar("_Self", bound="ClosingContext")


class ClosingContext:
    """``with obj:`` returns ``obj`` and calls ``obj.close()`` at the end, whatever happened.

    Subclasses define :meth:`close` (idempotent).
    """

    def close(self) -> None:
        """Release what the object holds."""
        raise NotImplementedError

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
