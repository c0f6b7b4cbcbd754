"""The benchmark suite's workloads: one of each kind a planner must tell apart.

Every function is defined at module level here (not in ``suite.py``), so that worker processes can
import it under any start method. Work is a fixed amount of computation (``spin`` loops, hashing,
BLAS), never "spin until the clock says so": on a shared machine a clock-bounded item would finish on
time even when it got half a core, and hide the contention the planner must cope with.

Sizes: ``scale=1`` is the full suite (serial runs of ~0.5–2 s on the 2-core dev VM), ``scale=4``
the ``--quick`` smoke run (a quarter of the items).
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

# The item functions are the package's own example workloads (importable under every start method).
from amorsize.workloads import digest as sha
from amorsize.workloads import spin
from amorsize.workloads import tiny as square
from amorsize.workloads import wait as nap

#: Loop iterations of :func:`spin` per millisecond on the 2-core dev VM (AMD EPYC, CPython 3.11):
#: 20 000 iterations took 1.09 ms, 100 000 took 5.8 ms.
SPIN_PER_MS = 18_000


def checksum_blob(blob: bytes) -> int:
    """Light work on a large input (~0.5 ms): a sum over every 16th byte, then a CRC of the whole."""
    return sum(blob[::16]) + zlib.crc32(blob)


def make_blob(n: int) -> bytes:
    """~2 ms of pure-Python work that returns a 1 MB result."""
    spin(2 * SPIN_PER_MS)
    return bytes([n % 256]) * 1_000_000


def matmul(seed: int) -> float:
    """NumPy/BLAS work: a 250 × 250 matrix product (multi-threaded BLAS when allowed)."""
    import numpy as np

    a = np.random.default_rng(seed).random((250, 250))
    return float((a @ a).trace())


@dataclass(frozen=True)
class Workload:
    """A named function and a way to make a fresh input.

    Attributes:
        name: short name, the row of the results table.
        description: what it stands for.
        func: the function, at module level.
        make_data: builds a fresh input (a list, or a generator for the generator workload).
        expect: what the right answer looks like, for the reader of the table.
    """

    name: str
    description: str
    func: Callable[[Any], Any]
    make_data: Callable[[], Iterable[Any]]
    expect: str


def _ms(milliseconds: float) -> int:
    return max(1, int(milliseconds * SPIN_PER_MS))


def _heterogeneous(n: int) -> list[int]:
    rng = random.Random(42)
    # log-uniform between 0.1 ms and 10 ms, shuffled: CV ≈ 1.2
    return [_ms(10 ** rng.uniform(-1.0, 1.0)) for _ in range(n)]


def _tail(n: int) -> list[int]:
    # 90 % short items (0.2 ms), then the long ones (10 ms) all at the end
    short = n * 9 // 10
    return [_ms(0.2)] * short + [_ms(10.0)] * (n - short)


def _blobs(n: int) -> list[bytes]:
    return [bytes([i % 256]) * 1_000_000 for i in range(n)]


def workloads(scale: int = 1) -> list[Workload]:
    """The suite's workloads.

    Args:
        scale: divide item counts by this (1: full suite; 4: the quick smoke run).

    Returns:
        The workloads, in table order.
    """

    def n(count: int) -> int:
        return max(4, count // scale)

    return [
        Workload("trivial", "1M × x*x (~70 ns each)", square, lambda: list(range(n(1_000_000))), "serial"),
        Workload("uniform-cpu", "1,000 × 1 ms pure Python", spin, lambda: [_ms(1.0)] * n(1_000), "processes"),
        Workload("few-heavy", "5 × 150 ms pure Python", spin, lambda: [_ms(150.0)] * 5, "processes"),
        Workload(
            "heterogeneous",
            "600 items, 0.1–10 ms log-uniform, shuffled",
            spin,
            lambda: _heterogeneous(n(600)),
            "processes, small chunks",
        ),
        Workload(
            "long-tail-end",
            "1,800 × 0.2 ms then 200 × 10 ms at the end",
            spin,
            lambda: _tail(n(2_000)),
            "processes, small chunks at the end",
        ),
        Workload("io-sleep", "400 × 5 ms sleep", nap, lambda: [0.005] * n(400), "many threads"),
        Workload("io-long", "100 × 20 ms sleep", nap, lambda: [0.02] * n(100), "a thread per item"),
        Workload(
            "large-input",
            "240 × 1 MB bytes in, ~0.5 ms of work each",
            checksum_blob,
            lambda: _blobs(n(240)),
            "serial or threads (transfer dominates)",
        ),
        Workload(
            "large-output",
            "200 × 2 ms work, 1 MB bytes out",
            make_blob,
            lambda: list(range(n(200))),
            "processes if the pipe keeps up",
        ),
        Workload(
            "numpy-blas",
            "300 × 250² matmul (BLAS threads)",
            matmul,
            lambda: list(range(n(300))),
            "serial/threads (BLAS already uses the cores)",
        ),
        Workload(
            "generator",
            "generator of 2,000 × 0.5 ms",
            spin,
            lambda: (_ms(0.5) for _ in range(n(2_000))),
            "processes",
        ),
        Workload(
            "gil-free-hash",
            "200 × SHA-256 of 4 MB (releases the GIL)",
            sha,
            lambda: range(n(200)),
            "threads",
        ),
        Workload(
            "fine-grained",
            "100k × 10 µs pure Python",
            spin,
            lambda: [_ms(0.01)] * n(100_000),
            "processes, large chunks",
        ),
    ]
