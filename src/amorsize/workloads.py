"""Built-in example workloads, one of each kind Amorsize must tell apart.

Used by ``python -m amorsize demo`` and by the benchmark suite. Each function is defined at module
level so every start method (fork, forkserver, spawn) can import it in a worker.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["WORKLOADS", "Workload"]

_PAYLOAD = b"amorsize" * 500_000  # 4 MB: hashlib releases the GIL on buffers over 2 KiB


def tiny(x: int) -> int:
    """Trivial per-item work: serial must win."""
    return x * x


def spin(n: int) -> int:
    """Pure-Python CPU work, about ``n`` loop iterations (20k ≈ 1 ms here)."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def busy(seconds: float) -> float:
    """Spin the CPU (holding the GIL) for ``seconds``: pure-Python work of an exact duration."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
    return seconds


def wait(seconds: float) -> float:
    """Waiting work (a stand-in for network or disk I/O): threads, many of them."""
    time.sleep(seconds)
    return seconds


def digest(x: int) -> str:
    """GIL-releasing C work: SHA-256 of a 4 MB buffer."""
    return hashlib.sha256(_PAYLOAD + x.to_bytes(8, "little")).hexdigest()


@dataclass(frozen=True)
class Workload:
    """A named function and a way to make its input.

    Attributes:
        name: short name.
        description: what it stands for.
        func: the function.
        make_data: builds a fresh input each time it is called.
    """

    name: str
    description: str
    func: Callable[[Any], Any]
    make_data: Callable[[], Iterable[Any]]


def _skewed() -> list[int]:
    return [2_000] * 1_800 + [200_000] * 200


WORKLOADS: tuple[Workload, ...] = (
    Workload("tiny", "200k × x*x: far too cheap to parallelise", tiny, lambda: range(200_000)),
    Workload("cpu", "400 × ~5 ms of pure-Python arithmetic", spin, lambda: [100_000] * 400),
    Workload("io", "400 × 5 ms waits (network-like)", wait, lambda: [0.005] * 400),
    Workload("gil-free", "200 × SHA-256 of 4 MB (releases the GIL)", digest, lambda: range(200)),
    Workload("skewed", "1,800 short items then 200 long ones", spin, _skewed),
    Workload("stream", "a generator of 2,000 ~0.5 ms items", spin, lambda: (10_000 for _ in range(2_000))),
)
