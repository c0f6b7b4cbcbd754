"""The adaptive chunk-size rule: pure functions of a small frozen state.

The runner starts from the planner's chunk size (itself seeded by the dry run), then after each
finished chunk calls :func:`observe` with the chunk's measured duration, and before each new chunk
asks :func:`chunksize_for` how many items to send. Like joblib's auto-batching, the size is steered
toward a target duration per chunk; unlike it, the start is the planner's informed guess, each
step is bounded, and the tail of a known-length run is split so that no worker idles while one
finishes a long last chunk.

Nothing here reads a clock: durations come in as numbers.

    >>> state = ChunkState(chunksize=10)
    >>> state = observe(state, duration=0.01, n_items=10, target=0.2)  # 1 ms per item: too small
    >>> state.chunksize  # the ideal is 200 items, but one step at most doubles
    20
    >>> state = observe(state, duration=0.02, n_items=20, target=0.2)
    >>> state.chunksize
    40
    >>> chunksize_for(state, remaining=1000, n_workers=2)  # far from the end: the steady size
    40
    >>> chunksize_for(state, remaining=60, n_workers=2)  # the tail: split across workers
    15
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "MAX_CHUNKSIZE",
    "MAX_GROWTH",
    "MAX_SHRINK",
    "SMOOTHING",
    "TAIL_MIN_CHUNK_SECONDS",
    "TAIL_SECONDS_PER_WORKER",
    "TAIL_SPLIT",
    "ChunkState",
    "chunksize_for",
    "observe",
]

#: Largest factor by which one observation may grow the chunk size. joblib's auto-batching doubles
#: its batch size when batches are too quick; bounding the step keeps one suspiciously fast chunk
#: (a cache hit, a timer glitch) from multiplying the size by orders of magnitude.
MAX_GROWTH = 2.0

#: Largest factor by which one observation may shrink the chunk size (joblib halves a batch that
#: ran too long). Symmetric with growth, so a one-off slow chunk (a GC pause) costs at most a halving.
MAX_SHRINK = 2.0

#: Weight of the newest per-item time in the smoothed estimate (exponential moving average).
#: 0.5 halves the pull of one outlier chunk while following a real change of item cost within
#: about three chunks. Chosen by reasoning, not yet by benchmark.
SMOOTHING = 0.5

#: Upper bound on items per chunk. A chunk's items are held in the parent (and pickled in one piece
#: for processes); with the default two chunks in flight per worker, 100 000 items per chunk keeps
#: the parent's share of a stream at a few MB for small items while making per-chunk overhead
#: (≈ 0.1 ms, ``MachineCosts.fallback``) negligible even for microsecond items.
MAX_CHUNKSIZE = 100_000

#: Near the end of a known-length run a chunk holds at most ``remaining / (TAIL_SPLIT × workers)``
#: items, so the last items are spread over all workers in pieces of shrinking size. 2 follows the
#: common guided-scheduling rule (OpenMP ``guided`` uses remaining / workers; halving again leaves
#: each worker at least two pieces to balance with).
TAIL_SPLIT = 2

#: The tail is not split into chunks expected to run shorter than this. Splitting a 5 ms chunk can
#: save under 5 ms of idle time, and costs one more dispatch (≈ 0.1 ms on processes,
#: ``MachineCosts.fallback``): below this size the split is not worth its overhead.
TAIL_MIN_CHUNK_SECONDS = 0.005
#: … nor, with many workers, shorter than this many seconds per worker. The parent hands out chunks
#: one at a time (~30–60 µs each with 64 threads here), so ``n`` workers finishing chunks of ``d``
#: seconds keep it ``n × 50 µs / d`` busy: at 200 µs per worker, a quarter of its time. Waiting
#: work on 70–125 threads was split into 350–770 chunks instead of ~100 and ran 10–20 % slower.
TAIL_SECONDS_PER_WORKER = 200e-6


@dataclass(frozen=True)
class ChunkState:
    """What the rule remembers between chunks.

    Attributes:
        chunksize: the steady chunk size (before any tail shrinking), ≥ 1.
        per_item: smoothed seconds per item, or None before the first observation.
        n_observed: how many chunk durations have been observed.
    """

    chunksize: int
    per_item: float | None = None
    n_observed: int = 0

    def __post_init__(self) -> None:
        if self.chunksize < 1:
            raise ValueError(f"chunksize must be >= 1 (got {self.chunksize})")


def observe(
    state: ChunkState,
    duration: float,
    n_items: int,
    target: float,
    *,
    max_chunksize: int = MAX_CHUNKSIZE,
) -> ChunkState:
    """Fold one finished chunk's duration into the state and steer the size toward ``target``.

    Args:
        state: the state before this chunk's result.
        duration: wall seconds the worker spent on the chunk.
        n_items: how many items of the chunk were attempted (``ChunkOutcome.n_done``).
        target: seconds one chunk should take.
        max_chunksize: hard upper bound on the chunk size.

    Returns:
        The new state. Unchanged when the observation carries no information (no items, or a
        negative or non-finite duration).

    Raises:
        ValueError: when ``target`` is not positive or ``max_chunksize`` < 1.
    """
    if not target > 0:
        raise ValueError(f"target must be > 0 seconds (got {target})")
    if max_chunksize < 1:
        raise ValueError(f"max_chunksize must be >= 1 (got {max_chunksize})")
    if n_items < 1 or not math.isfinite(duration) or duration < 0:
        return state
    sample = duration / n_items
    per_item = sample if state.per_item is None else SMOOTHING * sample + (1 - SMOOTHING) * state.per_item
    old = state.chunksize
    low = math.ceil(old / MAX_SHRINK)
    high = math.floor(old * MAX_GROWTH)
    ideal = target / per_item if per_item > 0 else math.inf
    size = high if ideal >= high else max(low, round(ideal))
    size = max(1, min(size, max_chunksize))
    return ChunkState(chunksize=size, per_item=per_item, n_observed=state.n_observed + 1)


def chunksize_for(
    state: ChunkState,
    remaining: int | None,
    n_workers: int,
    *,
    min_chunk_seconds: float = TAIL_MIN_CHUNK_SECONDS,
) -> int:
    """How many items the next chunk should hold.

    The steady size, except near the end of a known-length run with several workers: then at most
    ``remaining // (TAIL_SPLIT × n_workers)`` items (but not fewer than would run for
    ``min_chunk_seconds``, or for :data:`TAIL_SECONDS_PER_WORKER` × ``n_workers``), and never more
    than ``remaining``. Before any chunk was observed, a size that already covers the rest in one
    round (``size × n_workers ≥ remaining``: the planner gave each worker one chunk) is kept.

    Args:
        state: the current state.
        remaining: items of the input not yet submitted (≥ 1), or None when the length is unknown.
        n_workers: how many chunks run at once.
        min_chunk_seconds: the tail is not cut into chunks expected to be shorter than this.

    Returns:
        A chunk size ≥ 1, ≤ ``remaining`` when known, ≤ ``state.chunksize``.

    Raises:
        ValueError: when ``remaining`` < 1 or ``n_workers`` < 1.
    """
    if n_workers < 1:
        raise ValueError(f"n_workers must be >= 1 (got {n_workers})")
    size = state.chunksize
    if remaining is None:
        return size
    if remaining < 1:
        raise ValueError(f"remaining must be >= 1 or None (got {remaining})")
    if n_workers > 1 and not (state.n_observed == 0 and size * n_workers >= remaining):
        # (a run planned as one round — a chunk per worker — starts as planned: split in two,
        # 399 waiting items on 80 threads went out in 117 chunks of 3-4 and ran in two rounds)
        tail = remaining // (TAIL_SPLIT * n_workers)
        if state.per_item is not None:
            # Items so quick that a chunk of them runs under min_chunk_seconds: not worth splitting.
            shortest = max(min_chunk_seconds, TAIL_SECONDS_PER_WORKER * n_workers)
            worthwhile = shortest / state.per_item if state.per_item > 0 else math.inf
            tail = size if worthwhile >= size else max(tail, math.ceil(worthwhile))
        size = min(size, max(1, tail))
    return max(1, min(size, remaining))
