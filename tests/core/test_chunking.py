"""The adaptive chunk-size rule: examples, then properties."""

from __future__ import annotations

import doctest
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

import amorsize.core.chunking as chunking
from amorsize.core.chunking import (
    MAX_CHUNKSIZE,
    MAX_GROWTH,
    MAX_SHRINK,
    TAIL_MIN_CHUNK_SECONDS,
    TAIL_SECONDS_PER_WORKER,
    TAIL_SPLIT,
    ChunkState,
    chunksize_for,
    observe,
)

sizes = st.integers(min_value=1, max_value=MAX_CHUNKSIZE)
durations = st.floats(min_value=0.0, max_value=1e4, allow_nan=False, allow_infinity=False)
per_item_times = st.floats(min_value=1e-9, max_value=100.0)
targets = st.floats(min_value=1e-4, max_value=100.0)
workers = st.integers(min_value=1, max_value=256)


def test_docstring_examples() -> None:
    assert doctest.testmod(chunking).failed == 0


class TestChunkState:
    def test_rejects_size_below_one(self) -> None:
        with pytest.raises(ValueError, match=r"chunksize must be >= 1 \(got 0\)"):
            ChunkState(chunksize=0)


class TestObserve:
    def test_first_observation_is_taken_as_is(self) -> None:
        state = observe(ChunkState(100), duration=0.1, n_items=100, target=0.2)
        assert state.per_item == pytest.approx(0.001)
        assert state.chunksize == 200
        assert state.n_observed == 1

    def test_on_target_keeps_the_size(self) -> None:
        assert observe(ChunkState(100), duration=0.2, n_items=100, target=0.2).chunksize == 100

    def test_growth_is_bounded(self) -> None:
        assert observe(ChunkState(10), duration=1e-6, n_items=10, target=0.2).chunksize == 20

    def test_shrink_is_bounded(self) -> None:
        assert observe(ChunkState(100), duration=100.0, n_items=100, target=0.2).chunksize == 50

    def test_zero_duration_grows_by_the_bound(self) -> None:
        assert observe(ChunkState(7), duration=0.0, n_items=7, target=0.2).chunksize == 14

    def test_smoothing_damps_one_outlier(self) -> None:
        state = ChunkState(100, per_item=0.002)  # on target: 100 × 2 ms = 0.2 s
        state = observe(state, duration=2.0, n_items=100, target=0.2)  # one chunk 10× slower
        assert state.per_item == pytest.approx(0.011)
        assert state.chunksize == 50  # halved, not divided by 10

    @pytest.mark.parametrize(("duration", "n_items"), [(0.5, 0), (-1.0, 10), (math.nan, 10), (math.inf, 10)])
    def test_uninformative_observation_changes_nothing(self, duration: float, n_items: int) -> None:
        state = ChunkState(10, per_item=0.01, n_observed=3)
        assert observe(state, duration=duration, n_items=n_items, target=0.2) == state

    def test_capped_at_max_chunksize(self) -> None:
        assert (
            observe(ChunkState(90), duration=0.0, n_items=90, target=0.2, max_chunksize=100).chunksize == 100
        )

    @pytest.mark.parametrize("target", [0.0, -1.0, math.nan])
    def test_rejects_bad_target(self, target: float) -> None:
        with pytest.raises(ValueError, match="target must be > 0"):
            observe(ChunkState(1), duration=1.0, n_items=1, target=target)

    @given(sizes, durations, st.integers(min_value=1, max_value=10**6), targets)
    def test_step_is_bounded_and_at_least_one(
        self, size: int, duration: float, n: int, target: float
    ) -> None:
        new = observe(ChunkState(size), duration=duration, n_items=n, target=target).chunksize
        assert 1 <= new <= MAX_CHUNKSIZE
        assert new <= size * MAX_GROWTH
        assert new >= size / MAX_SHRINK

    @given(sizes, per_item_times, targets)
    def test_converges_to_target_for_constant_item_time(
        self, size: int, per_item: float, target: float
    ) -> None:
        state = ChunkState(size)
        for _ in range(40):  # 2**40 covers any ratio the strategies allow
            state = observe(
                state, duration=per_item * state.chunksize, n_items=state.chunksize, target=target
            )
        ideal = min(max(target / per_item, 1.0), MAX_CHUNKSIZE)
        assert abs(state.chunksize - ideal) <= max(1.0, 1e-9 * ideal)
        if 1.0 < ideal < MAX_CHUNKSIZE:  # the chunk's duration is on target, within one item
            assert abs(state.chunksize * per_item - target) <= per_item * 1.0000001

    @given(sizes, per_item_times, targets)
    def test_moves_monotonically_toward_target(self, size: int, per_item: float, target: float) -> None:
        state = observe(ChunkState(size), duration=per_item * size, n_items=size, target=target)
        ideal = target / per_item
        if ideal >= size:
            assert state.chunksize >= size
        else:
            assert state.chunksize <= size


class TestChunksizeFor:
    def test_unknown_length_gives_the_steady_size(self) -> None:
        assert chunksize_for(ChunkState(500), remaining=None, n_workers=8) == 500

    def test_far_from_the_end_gives_the_steady_size(self) -> None:
        assert chunksize_for(ChunkState(100), remaining=10_000, n_workers=2) == 100

    def test_tail_is_split_across_workers(self) -> None:
        state = ChunkState(100, n_observed=1)
        assert chunksize_for(state, remaining=200, n_workers=2) == 200 // (TAIL_SPLIT * 2)

    def test_a_run_planned_as_one_round_starts_as_planned(self) -> None:
        # 80 workers, 399 items, a chunk of 5 each: not halved into 117 chunks of 3-4 (two rounds)
        assert chunksize_for(ChunkState(5), remaining=399, n_workers=80) == 5
        assert chunksize_for(ChunkState(5), remaining=401, n_workers=80) == 2  # more than one round
        assert chunksize_for(ChunkState(5, n_observed=1), remaining=399, n_workers=80) == 2  # mid-run

    def test_tail_not_split_below_the_minimum_duration(self) -> None:
        per_item = TAIL_MIN_CHUNK_SECONDS / 10  # 10 items make the smallest worthwhile chunk
        state = ChunkState(100, per_item=per_item, n_observed=1)
        assert chunksize_for(state, remaining=20, n_workers=2) == 10
        assert chunksize_for(state, remaining=4, n_workers=2) == 4

    def test_many_workers_keep_tail_chunks_long_enough_for_the_parent(self) -> None:
        # 74 threads of 1 ms waits: 15 items (74 × 200 µs) at least, where 5 ms alone gave 5
        state = ChunkState(27, per_item=0.001, n_observed=1)
        shortest = math.ceil(74 * TAIL_SECONDS_PER_WORKER / 0.001)
        assert shortest > TAIL_MIN_CHUNK_SECONDS / 0.001
        assert chunksize_for(state, remaining=500, n_workers=74) == shortest
        assert chunksize_for(state, remaining=10, n_workers=74) == 10
        # two workers: the minimum duration alone, as before
        mid_run = ChunkState(27, per_item=0.001, n_observed=1)
        assert chunksize_for(mid_run, remaining=500, n_workers=2) == 27
        assert chunksize_for(mid_run, remaining=30, n_workers=2) == 7

    def test_free_items_are_not_split(self) -> None:
        assert chunksize_for(ChunkState(100, per_item=0.0), remaining=150, n_workers=4) == 100

    def test_subnormal_item_time_does_not_overflow(self) -> None:
        assert chunksize_for(ChunkState(1, per_item=2.2e-311), remaining=1, n_workers=2) == 1
        assert chunksize_for(ChunkState(50, per_item=5e-324), remaining=60, n_workers=2) == 50

    def test_one_worker_is_never_split(self) -> None:
        assert chunksize_for(ChunkState(100), remaining=120, n_workers=1) == 100
        assert chunksize_for(ChunkState(100), remaining=30, n_workers=1) == 30

    def test_never_below_one(self) -> None:
        assert chunksize_for(ChunkState(100), remaining=1, n_workers=64) == 1

    @pytest.mark.parametrize(("remaining", "n_workers"), [(0, 1), (-5, 2), (10, 0)])
    def test_rejects_bad_arguments(self, remaining: int, n_workers: int) -> None:
        with pytest.raises(ValueError, match="must be >= 1"):
            chunksize_for(ChunkState(10), remaining=remaining, n_workers=n_workers)

    @given(
        sizes,
        st.one_of(st.none(), st.floats(min_value=0.0, max_value=10.0)),
        st.one_of(st.none(), st.integers(min_value=1, max_value=10**9)),
        workers,
    )
    def test_bounds(self, size: int, per_item: float | None, remaining: int | None, n_workers: int) -> None:
        got = chunksize_for(ChunkState(size, per_item=per_item), remaining=remaining, n_workers=n_workers)
        assert 1 <= got <= size
        if remaining is not None:
            assert got <= remaining

    @given(sizes, st.integers(min_value=1, max_value=10**7), st.integers(min_value=2, max_value=256))
    def test_tail_leaves_work_for_every_worker(self, size: int, remaining: int, n_workers: int) -> None:
        got = chunksize_for(ChunkState(size, n_observed=1), remaining=remaining, n_workers=n_workers)
        assert got == 1 or got * TAIL_SPLIT * n_workers <= remaining
        first = chunksize_for(ChunkState(size), remaining=remaining, n_workers=n_workers)
        if size * n_workers >= remaining:  # a run laid out as one round starts as laid out
            assert first == min(size, remaining)
        else:
            assert first == got
