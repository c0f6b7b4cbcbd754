"""Amorsize: decide how a function should run over data, then run it that way, reliably."""

__version__ = "0.2.0"

__all__ = ["__version__"]
