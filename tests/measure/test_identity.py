"""Function identity: behaviour changes change the key; the same function keeps it."""

from __future__ import annotations

import functools

from amorsize.measure.identity import function_key, function_name


def double(x: int) -> int:
    return x * 2


class Scaler:
    def __init__(self, k: int) -> None:
        self.k = k

    def scale(self, x: int) -> int:
        return x * self.k


def make(k: int):  # type: ignore[no-untyped-def]
    return lambda x: x * k


class TestFunctionKey:
    def test_different_constants_differ(self) -> None:
        assert function_key(lambda x: x * 2) != function_key(lambda x: x * 3)

    def test_same_function_is_stable(self) -> None:
        assert function_key(double) == function_key(double)

    def test_closures_differ_by_captured_value(self) -> None:
        assert function_key(make(2)) != function_key(make(3))
        assert function_key(make(2)) == function_key(make(2))

    def test_partials_differ_by_bound_arguments(self) -> None:
        assert function_key(functools.partial(pow, 2)) != function_key(functools.partial(pow, 3))

    def test_bound_methods_differ_by_instance_state(self) -> None:
        assert function_key(Scaler(2).scale) != function_key(Scaler(3).scale)

    def test_builtins_and_callables_have_keys(self) -> None:
        assert function_key(abs).startswith("builtins.abs#")
        assert function_key(len) != function_key(abs)

    def test_name_is_readable(self) -> None:
        assert function_name(double).endswith("test_identity.double")
        assert function_name(functools.partial(double)).endswith("double")
