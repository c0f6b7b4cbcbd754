"""Stable identities for functions: what makes two functions "the same" for history and checkpoints.

The original tool keyed its cache on the function's name and signature, so ``lambda x: x * 2`` and
``lambda x: x * 3`` were the same function. Here the key digests the code itself — bytecode,
constants, names, recursively through nested code — plus the values a closure captured and the
arguments a ``functools.partial`` binds, so any change in behaviour changes the key.
"""

from __future__ import annotations

import functools
import hashlib
import pickle
import types
from collections.abc import Callable
from typing import Any

import cloudpickle

__all__ = ["function_key", "function_name"]


def function_name(func: Callable[..., Any]) -> str:
    """``module.qualname`` of a callable, for people (``functools.partial`` shows its function)."""
    target: Any = func.func if isinstance(func, functools.partial) else func
    module = getattr(target, "__module__", None) or "?"
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", None) or type(target).__name__
    return f"{module}.{name}"


def _feed_code(digest: Any, code: types.CodeType) -> None:
    digest.update(code.co_code)
    digest.update(repr(code.co_names).encode())
    digest.update(repr(code.co_varnames).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _feed_code(digest, const)
        else:
            digest.update(repr(const).encode())


def _feed_value(digest: Any, value: Any) -> None:
    try:
        digest.update(cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception:
        digest.update(f"{type(value).__qualname__}@{id(value)}".encode())  # unpicklable: this process only


def function_key(func: Callable[..., Any]) -> str:
    """A digest that changes whenever the function's behaviour could change.

    Args:
        func: a function, lambda, closure, bound method, ``functools.partial`` or callable object.

    Returns:
        ``"module.qualname#<16 hex digits>"``.

    Example:
        >>> function_key(lambda x: x * 2) != function_key(lambda x: x * 3)
        True
    """
    digest = hashlib.blake2b(digest_size=8)
    target: Any = func
    if isinstance(target, functools.partial):
        _feed_value(digest, (target.args, target.keywords))
        target = target.func
    if isinstance(target, types.MethodType):
        _feed_value(digest, target.__self__)
        target = target.__func__
    code = getattr(target, "__code__", None)
    if isinstance(code, types.CodeType):
        _feed_code(digest, code)
        for cell in getattr(target, "__closure__", None) or ():
            try:
                _feed_value(digest, cell.cell_contents)
            except ValueError:  # an empty cell
                digest.update(b"<empty cell>")
        _feed_value(digest, getattr(target, "__defaults__", None))
    else:
        _feed_value(digest, target)
    return f"{function_name(func)}#{digest.hexdigest()}"
