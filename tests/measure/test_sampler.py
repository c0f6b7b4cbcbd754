"""The dry run: data kept, errors named, timings honest, sampling adaptive, GIL release measured."""

from __future__ import annotations

import collections
import ctypes
import hashlib
import itertools
import pickle
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from measure_funcs import cpu_spin as spin

from amorsize.errors import ConfigurationError, SamplingError
from amorsize.measure import sampler as sampler_module
from amorsize.measure.sampler import MAX_SAMPLES, Sample, global_state_caveats, sample
from amorsize.workloads import wait


def square(x: int) -> int:
    return x * x


def allocating(x: int) -> int:
    """About 2–5 ms of allocation-heavy work: the case tracemalloc slowed 40–150×."""
    chunks = [bytes(1000) + bytes([i % 256]) for i in range(4000)]
    return len(chunks) + x


class FakeClock:
    """A clock whose every read advances by ``step`` seconds."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


class TestDataIsKept:
    def test_list_results_and_data(self) -> None:
        data = list(range(50))
        s = sample(square, data, probe_threads=False)
        assert s.results == tuple(x * x for x in data[: s.n_done])
        assert s.data() is data
        assert list(s.rest()) == data[s.n_done :]

    def test_range(self) -> None:
        s = sample(square, range(10), probe_threads=False)
        assert s.profile.total_items == 10
        assert list(s.data()) == list(range(10))

    def test_generator_keeps_every_item_in_order(self) -> None:
        def gen() -> Iterator[int]:
            yield from range(1000)

        s = sample(square, gen())
        assert s.profile.total_items is None
        assert list(s.data()) == list(range(1000))

    def test_rest_of_generator_follows_the_sample(self) -> None:
        s = sample(square, iter(range(1000)))
        assert list(s.rest()) == list(range(s.n_done, 1000))

    def test_infinite_iterator_is_not_materialised(self) -> None:
        s = sample(square, itertools.count())
        assert s.n_done <= MAX_SAMPLES + 2 * 64
        head = list(itertools.islice(s.data(), s.n_done + 5))
        assert head == list(range(s.n_done + 5))

    def test_empty(self) -> None:
        s = sample(square, [])
        assert s.n_done == 0
        assert s.profile.n_sampled == 0
        assert list(s.data()) == []

    def test_fewer_items_than_sample_size(self) -> None:
        s = sample(square, [3, 4])
        assert s.results == (9, 16)
        assert list(s.rest()) == []


class TestErrors:
    def test_failing_item_names_its_index_and_chains(self) -> None:
        def fails_on_three(x: int) -> int:
            if x == 3:
                raise KeyError("boom")
            return x

        with pytest.raises(SamplingError) as info:
            sample(fails_on_three, range(10), probe_threads=False)
        assert info.value.index == 3
        assert isinstance(info.value.__cause__, KeyError)
        assert "item 3" in str(info.value) and "KeyError" in str(info.value)
        assert info.value.__cause__.__traceback__ is not None

    @pytest.mark.parametrize("error", [ValueError, SystemExit])  # SystemExit would end its thread only
    def test_failing_item_in_the_thread_probe(self, error: type[BaseException]) -> None:
        def fails_off_the_main_thread(x: int) -> int:
            if threading.current_thread() is not threading.main_thread():
                raise error("late")
            time.sleep(0.001)
            return x

        with pytest.raises(SamplingError) as info:
            sample(fails_off_the_main_thread, range(1000), sample_size=2, probe_threads=True)
        assert isinstance(info.value.__cause__, error)
        assert info.value.index >= 2  # the first probe item, after the serially sampled ones

    @pytest.mark.parametrize("bad", [None, 3, "not callable"])
    def test_not_callable(self, bad: Any) -> None:
        with pytest.raises(ConfigurationError, match="callable"):
            sample(bad, [1])

    def test_not_iterable(self) -> None:
        with pytest.raises(ConfigurationError, match="iterable"):
            sample(square, 42)  # type: ignore[arg-type]

    @pytest.mark.parametrize("bad", [0, -1, 2.5, True])
    def test_bad_sample_size(self, bad: Any) -> None:
        with pytest.raises(ConfigurationError, match="sample_size"):
            sample(square, [1], sample_size=bad)


class TestPickling:
    def test_plain_function_pickles(self) -> None:
        assert sample(square, range(5)).profile.pickle_method == "pickle"

    def test_lambda_needs_cloudpickle(self) -> None:
        s = sample(lambda x: x + 1, range(5))
        assert s.profile.pickle_method == "cloudpickle"
        assert any("cloudpickle" in w for w in s.warnings)

    def test_unpicklable_function_falls_back_with_a_reason(self) -> None:
        lock = threading.Lock()

        def uses_lock(x: int) -> int:
            with lock:
                return x

        s = sample(uses_lock, range(5))
        assert s.profile.pickle_method is None
        assert not s.profile.picklable
        assert any("cannot be pickled" in w for w in s.warnings)

    def test_unpicklable_results(self) -> None:
        s = sample(lambda x: threading.Lock(), range(3))
        assert s.profile.pickle_method is None
        assert any("result" in w and "lock" in w.lower() for w in s.warnings)

    def test_sizes_are_measured(self) -> None:
        s = sample(lambda x: b"x" * 10_000, [bytes([i]) * 1000 for i in range(5)], probe_threads=False)
        assert 1000 <= s.profile.mean_input_bytes < 1200
        assert 10_000 <= s.profile.mean_output_bytes < 10_200

    def test_sizes_are_shares_of_a_chunk(self) -> None:
        # Sampled items are pickled as one list, as chunks are: 2-byte ints take 3 bytes each in a
        # list's pickle, 6 when pickled alone (protocol header and stop code each time).
        s = sample(abs, range(1000, 1100), probe_threads=False)
        assert s.profile.mean_input_bytes <= 4
        assert s.profile.pickle_method == "pickle"

    def test_an_item_that_needs_cloudpickle_is_named(self) -> None:
        s = sample(lambda x: 0, [1, 2, lambda: 3, 4], probe_threads=False)
        assert s.profile.pickle_method == "cloudpickle"
        assert s.profile.mean_input_bytes > 4  # each item pickled alone: sizes from the fallback

    @pytest.mark.parametrize(
        "obj",
        [
            b"x" * 3_000_000,
            [bytes([i]) * 100_000 for i in range(30)],
            [float(i) for i in range(261)],
            [{"a": i, "b": str(i)} for i in range(500)],
            "é" * 70_000,
            (1, None, [2.5], {"k": b"v"}),
        ],
        ids=["bytes-3MB", "30-bytes-100kB", "261-floats", "500-dicts", "str-140kB", "mixed-tuple"],
    )
    def test_pickled_size_is_the_length_of_the_pickle(self, obj: Any) -> None:
        assert sampler_module._pickled_size(obj) == len(pickle.dumps(obj, protocol=5))

    def test_large_items_sizes_counted_and_pickling_timed_on_the_first(self) -> None:
        # 24 MB of items: every size is counted, the round trip is timed on the first ~1 MB only
        items = [bytes([i]) * 1_000_000 for i in range(24)]
        results = [len(item) for item in items]
        ticks: list[float] = []

        def clock() -> float:
            ticks.append(time.perf_counter())
            return ticks[-1]

        listed = sampler_module._list_pickles(items, results, clock)
        assert listed is not None
        items_size, results_size, per_item = listed
        assert items_size == len(pickle.dumps(items, protocol=5))
        assert results_size == len(pickle.dumps(results, protocol=5))
        assert len(ticks) == 2 and per_item > 0  # one timed round trip, scaled to all 24 items
        assert sampler_module._list_pickles([1, lambda: 0], [1, 2], clock) is None  # needs cloudpickle


class TestAdaptiveSampling:
    def test_heavy_items_stop_after_one(self) -> None:
        # Each call "takes" 0.15 s (two clock reads per call → step 0.075): the original tool's worst case.
        s = sample(square, range(8), clock=FakeClock(0.075), probe_threads=False)
        assert s.profile.n_sampled == 1

    def test_heavy_items_stop_after_one_with_the_gil_canary_watching(self) -> None:
        # the canary's ~16 wake-ups in the first item are its reading: before, only those after the
        # first item counted, so a second heavy item always ran (5 × 150 ms: a 0.35 s dry run)
        s = sample(spin, [0.08] * 5, head_start=True)
        assert s.profile.n_sampled == 1
        assert s.profile.gil_held is not None and s.profile.gil_held > 0.5

    def test_cheap_items_reach_sample_size(self) -> None:
        # items that compute (CPU time = wall time): sleeping ones are sampled against a threaded run
        ticks = FakeClock(0.0005)
        s = sample(square, range(10_000), sample_size=5, clock=ticks, cpu_clock=ticks, probe_threads=False)
        assert s.profile.n_sampled >= 5

    def test_fast_items_get_more_samples(self) -> None:
        s = sample(square, range(100_000), sample_size=5, probe_threads=False)
        assert s.profile.n_sampled > 5

    def test_fast_items_are_timed_in_batches(self) -> None:
        # every clock read "takes" 0.1 µs: an item timed alone reads 0.1 µs, a batch of 64 as well
        s = sample(square, range(100_000), sample_size=5, clock=FakeClock(1e-7), probe_threads=False)
        assert s.profile.n_sampled > 5 + sampler_module.FAST_BATCH
        assert s.profile.durations == pytest.approx([1e-7 / sampler_module.FAST_BATCH] * s.profile.n_sampled)
        assert list(s.results) == [x * x for x in range(s.n_done)]

    def test_a_preempted_batch_does_not_make_fast_items_look_slow(self) -> None:
        class Preempted(FakeClock):
            """0.1 µs per read, but one read 5 ms late (another process took the core)."""

            def __call__(self) -> float:
                self.reads = getattr(self, "reads", 0) + 1
                if self.reads == 17:  # the end of a batch after the warm-up one
                    self.now += 0.005
                return super().__call__()

        s = sample(square, range(100_000), sample_size=5, clock=Preempted(1e-7), probe_threads=False)
        # without the cap the mean would be ~5 ms / 256 ≈ 20 µs per item, and 100k items "2 s"
        assert s.profile.mean_duration < 1e-6
        assert (
            s.profile.max_duration <= sampler_module.BATCH_OUTLIER * 1e-7 / sampler_module.FAST_BATCH * 1.01
        )

    def test_an_error_in_a_batch_names_its_item(self) -> None:
        def fails_at_100(x: int) -> int:
            if x == 100:
                raise ValueError("boom")
            return x

        with pytest.raises(SamplingError) as info:
            sample(fails_at_100, range(1000), clock=FakeClock(1e-7), probe_threads=False)
        assert info.value.index == 100
        assert isinstance(info.value.__cause__, ValueError)

    def test_varied_durations_get_more_samples(self) -> None:
        durations = itertools.cycle([0.0001, 0.002])

        def varied(x: int) -> int:  # computes (sleeping work is sampled against a threaded run)
            spin(next(durations))
            return x

        s = sample(varied, range(10_000), sample_size=5, probe_threads=False)
        assert s.profile.n_sampled > 5
        assert s.profile.is_heterogeneous


@pytest.mark.wallclock
class TestMeasurement:
    def test_timing_is_not_distorted(self) -> None:
        direct = []
        for x in range(5):
            start = time.perf_counter()
            allocating(x)
            direct.append(time.perf_counter() - start)
        s = sample(allocating, range(20), sample_size=5, probe_threads=False)
        assert s.profile.mean_duration < 3 * sorted(direct)[2]

    def test_peak_memory(self) -> None:
        def big(x: int) -> int:
            block = bytearray(60_000_000)
            block[::4096] = b"\x01" * len(block[::4096])
            return len(block) + x

        s = sample(big, range(3), probe_threads=False)
        assert s.profile.peak_memory_bytes > 40_000_000

    def test_sleep_is_io_bound_and_overlaps_on_threads(self) -> None:
        # Enough items for a full-size probe; best of three, as other processes may delay wake-ups.
        profiles = [sample(wait, [0.004] * 1000, probe_threads=True).profile for _ in range(3)]
        assert all(p.is_io_bound for p in profiles)
        assert max(p.thread_speedup or 0.0 for p in profiles) > 1.5

    def test_serialisation_is_measured_per_chunk_not_per_pickle(self) -> None:
        s = sample(square, range(10_000), probe_threads=False)
        started = time.perf_counter()
        for x in range(1000):  # one item at a time, as the old per-item measurement did
            pickle.loads(pickle.dumps(x))
            pickle.loads(pickle.dumps(x * x))
        one_by_one = (time.perf_counter() - started) / 1000
        assert s.profile.mean_serialize_seconds < one_by_one / 2  # a list of ints pickles ~10× cheaper

    def test_waiting_work_samples_little_and_probes_wide(self) -> None:
        calls: list[int] = []

        def recorded_wait(x: int) -> int:
            calls.append(x)
            time.sleep(0.005)
            return x

        s = sample(recorded_wait, range(400), probe_threads=True)
        # the serial phase stops at the first item (budget: 2 % of a run ~16× faster than serial)
        assert s.profile.probe_threads == sampler_module.WAIT_PROBE_THREADS
        assert s.n_done == 1 + sampler_module.WAIT_PROBE_THREADS
        assert sorted(calls) == list(range(s.n_done))  # each item once, kept in order
        assert list(s.results) == list(range(s.n_done))
        assert s.profile.thread_speedup is not None and s.profile.thread_speedup > 4

    def test_the_canarys_cpu_is_not_the_items(self) -> None:
        # The GIL canary wakes every 0.2 ms while the serial phase runs; process CPU time counts its
        # wake-ups (~0.5 ms in a 5 ms sleep), which read as 11 % CPU and planned 18 threads, not 64.
        # Best of three: other threads of this process (left by other tests) count in its CPU clock.
        shares = []
        for _ in range(3):
            profile = sample(wait, [0.005] * 400).profile
            shares.append(profile.cpu_times[0] / profile.durations[0])
        assert min(shares) < 0.04, shares  # ~0.11 when the canary's wake-ups were counted

    def test_pure_python_holds_the_gil(self) -> None:
        def spin(x: int) -> int:
            total = 0
            for i in range(30_000):
                total += i
            return total

        profiles = [sample(spin, range(1000), probe_threads=True).profile for _ in range(3)]
        assert all(p.cpu_ratio > 0.7 for p in profiles)
        assert min(p.thread_speedup or 9.0 for p in profiles) < 1.3  # best of three, as above

    def test_a_short_budget_still_gives_the_canary_its_reading(self) -> None:
        # 200 × 2 ms of pure Python with 1 MB results: the budget (2 % of the run) is ~4 items,
        # too few wake-ups about one dry run in three; the noisy two-thread probe then decided
        def blob(x: int) -> bytes:
            spin(0.002)
            return bytes([x % 256]) * 1_000_000

        for _ in range(10):  # before: None in 1 run of this test in 3, with 5 dry runs
            s = sample(blob, list(range(200)))
            assert s.profile.gil_held is not None, s.profile
            assert s.profile.gil_held > 0.5
            assert s.profile.n_sampled <= 20  # a few items more, not the run

    def test_hashlib_releases_the_gil(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(sampler_module, "PROBE_TARGET_SECONDS", 0.1)  # steadier than the default
        payload = b"x" * 4_000_000

        def digest(x: int) -> str:
            return hashlib.sha256(payload).hexdigest()

        # Other processes on a 2-core machine can take the second core: best of five probes.
        profiles = [sample(digest, range(1000), probe_threads=True).profile for _ in range(5)]
        assert all(p.cpu_ratio > 0.7 for p in profiles)
        speedups = [p.thread_speedup or 0.0 for p in profiles]
        assert max(speedups) > 1.3, speedups  # pure Python reads ≤ 1.1 (test above)


class TestWarmup:
    def test_a_slow_first_call_is_left_out_of_the_estimate(self) -> None:
        calls: list[int] = []

        def lazy(x: int) -> int:  # one-time work on the first call, as an import inside it
            spin(0.06 if not calls else 0.002)
            calls.append(x)
            return x

        s = sample(lazy, range(200), probe_threads=False)
        assert len(calls) == len(s.results) >= 5  # every sampled item still ran once
        assert s.profile.mean_duration < 0.006  # not (60 + 4 × 2) / 5 = 13.6 ms
        assert any("first call took" in w for w in s.warnings)

    def test_a_first_item_like_the_others_counts(self) -> None:
        sizes = [0.006, 0.003, 0.002, 0.004, 0.002, 0.003]  # the first is 1.5 × the slowest after it
        s = sample(spin, sizes, probe_threads=False)
        assert s.profile.durations[0] >= 0.005
        assert not any("first call" in w for w in s.warnings)

    def test_too_few_items_to_tell(self) -> None:
        s = sample(spin, [0.03, 0.002, 0.002], probe_threads=False)
        assert s.profile.durations[0] >= 0.03


def tail_heavy(x: int) -> int:
    """50 µs items, then 1 ms ones from position 1800 on: an input sorted by size."""
    spin(0.001 if x >= 1800 else 0.00005)
    return x


class TestLaterPositions:
    def test_a_sorted_input_is_sampled_further_along(self) -> None:
        s = sample(tail_heavy, list(range(2000)), probe_threads=False)
        positions = [position for position, _, _ in s.later]
        n_points = sampler_module.SPREAD_POINTS
        assert n_points <= len(positions) <= n_points + sampler_module.STEP_BISECTIONS  # + the step's
        assert positions == sorted(positions) and positions[0] >= s.n_done
        assert any(p >= 1800 for p in positions)
        assert all(result == item == p for p, item, result in s.later)
        assert s.n_computed == s.n_done + len(positions)
        # true mean 0.145 ms; the first items alone say 0.05 ms
        assert len(s.profile.weights) == len(s.profile.durations)
        assert 0.1e-3 < s.profile.mean_duration < 0.3e-3
        assert s.precomputed()[positions[-1]] == positions[-1]

    def test_a_step_between_two_points_is_located(self) -> None:
        # a clock that advances by each item's nominal cost: 1,800 × 0.05 ms, then 200 × 1 ms
        now = [0.0]

        def stepped(x: int) -> int:
            now[0] += 1e-3 if x >= 1800 else 5e-5
            return x

        def clock() -> float:
            return now[0]

        s = sample(stepped, list(range(2000)), probe_threads=False, clock=clock, cpu_clock=clock)
        positions = [position for position, _, _ in s.later]
        assert positions == sorted(positions)
        assert len(positions) == sampler_module.SPREAD_POINTS + sampler_module.STEP_BISECTIONS
        # the step lies between two sampled positions at most 2000 / 8 / 2**3 ≈ 31 apart
        below = max(p for p in positions if p < 1800)
        above = min(p for p in positions if p >= 1800)
        assert above - below <= 32
        # true mean 0.145 ms; each point standing for an eighth of the input said 0.167 ms
        assert s.profile.mean_duration == pytest.approx(0.145e-3, rel=0.03)
        assert sum(s.profile.weights) == pytest.approx(2000)
        assert all(result == item == p for p, item, result in s.later)

    def test_a_uniform_input_counts_every_sample_once(self) -> None:
        # a clock that advances by 50 µs ± 10 % per item (a real 50 µs item timed alone reads about
        # that; a real clock on a loaded VM can also slow down for the later points alone, which is
        # not what this test is about)
        now = [0.0]
        jitter = random.Random(7)

        def noisy(x: int) -> int:
            now[0] += 5e-5 * jitter.uniform(0.9, 1.1)
            return x

        def clock() -> float:
            return now[0]

        s = sample(noisy, list(range(2000)), probe_threads=False, clock=clock, cpu_clock=clock)
        assert len(s.later) == sampler_module.SPREAD_POINTS
        assert s.profile.weights == ()
        assert s.profile.mean_duration == pytest.approx(5e-5, rel=0.1)

    def test_not_for_iterators_short_inputs_or_fast_items(self) -> None:
        assert sample(tail_heavy, iter(range(2000)), probe_threads=False).later == ()
        assert sample(tail_heavy, list(range(300)), probe_threads=False).later == ()
        assert sample(square, list(range(100_000)), probe_threads=False).later == ()

    def test_an_error_there_names_its_position(self) -> None:
        def breaks_late(x: int) -> int:
            spin(0.00005)
            if x >= 1500:
                raise ValueError(x)
            return x

        with pytest.raises(SamplingError) as info:
            sample(breaks_late, list(range(2000)), probe_threads=False)
        assert info.value.index >= 1500


class TestBlasProbe:
    def test_blas_items_are_probed_with_their_threads_capped(self) -> None:
        np = pytest.importorskip("numpy")
        if sampler_module.blas_threads_loaded() <= 1:
            pytest.skip("BLAS runs one thread here: nothing to cap")
        from amorsize.measure.machine import usable_cores

        def matmul(seed: int) -> float:
            a = np.random.default_rng(seed).random((300, 300))
            return float((a @ a).trace())

        # best of three: the CPU clock must see both BLAS threads busy for the items to count as BLAS
        profiles = [sample(matmul, range(2000)).profile for _ in range(3)]
        capped = [p for p in profiles if p.capped_duration is not None]
        assert capped, [p.cpu_ratio for p in profiles]
        assert all(p.capped_blas_threads == max(1, usable_cores() // 2) for p in capped)
        assert all(p.thread_speedup is not None and p.capped_duration > 0 for p in capped)
        # OpenBLAS threads spin for a while after a call, and the process CPU clock counts them: a
        # pure-Python item sampled right now would read a CPU ratio ~1.5. Let them settle.
        time.sleep(0.5)

    @pytest.mark.timeout(60)
    def test_capped_probe_runs_on_two_threads_once_openblas_is_quiet(
        self, fresh_python: Callable[..., str]
    ) -> None:
        pytest.importorskip("numpy")
        if sampler_module.blas_threads_loaded() <= 1:
            pytest.skip("BLAS runs one thread here: nothing to cap")
        # a fresh interpreter: threads other tests left here keep the probe in one thread (next test)
        script = """
        import threading
        import numpy as np
        from amorsize.measure.sampler import sample

        def matmul(seed):
            a = np.random.default_rng(seed).random((300, 300))
            return threading.get_ident(), float((a @ a).trace())

        for _ in range(3):  # the CPU clock must see both BLAS threads busy: best of three
            s = sample(matmul, range(2000))
            if s.profile.capped_duration is not None:
                print(len({ident for ident, _ in s.results}))
                break
        """
        stdout = fresh_python(script, timeout=50)
        assert stdout.split() == ["3"]  # the serial phase's thread and the probe's two

    @pytest.mark.timeout(60)
    def test_capped_probe_leaves_openblas_quiet(
        self, fresh_python: Callable[..., str], openblas_script: Callable[[str], str]
    ) -> None:
        # Lifting the probe's cap restarts OpenBLAS's pool, whose helper then spun ~100 ms through the
        # planning and the run's start. The probe is called directly: whether sample() runs it at all
        # depends on what the CPU clock reads.
        script = openblas_script(
            """
        from amorsize.measure.sampler import _capped_probe, _Measured

        def square(x):
            return float((x @ x)[0, 0])

        square(a)  # uncapped: OpenBLAS's helper spins ~100 ms after it
        spinning = cpu_while_sleeping()
        measured = _Measured(items=[a], results=[square(a)], durations=[0.002], cpu_times=[0.004])
        probed = _capped_probe(square, iter([a] * 8), measured, time.perf_counter, 0.01, 1)
        assert probed is not None and measured.results[1:] == [400.0] * (len(measured.results) - 1)
        after = cpu_while_sleeping()
        assert square(a) == 400.0  # uncapped calls after it: the pool starts again
        print(after, spinning)
        """
        )
        stdout = fresh_python(script, timeout=50)
        after, spinning = map(float, stdout.split())
        assert after < 0.02 <= spinning, stdout

    def test_capped_probe_stays_in_the_calling_thread_while_another_may_call_blas(self) -> None:
        np = pytest.importorskip("numpy")
        if sampler_module.blas_threads_loaded() <= 1:
            pytest.skip("BLAS runs one thread here: nothing to cap")

        def matmul(seed: int) -> tuple[int, float]:
            a = np.random.default_rng(seed).random((300, 300))
            return threading.get_ident(), float((a @ a).trace())

        release = threading.Event()
        other = threading.Thread(target=release.wait, name="user-thread", daemon=True)
        other.start()
        try:
            samples = [sample(matmul, range(2000)) for _ in range(3)]
        finally:
            release.set()
            other.join()
        capped = [s for s in samples if s.profile.capped_duration is not None]
        assert capped, [s.profile.cpu_ratio for s in samples]
        assert all({ident for ident, _ in s.results} == {threading.get_ident()} for s in capped)
        time.sleep(0.5)  # let OpenBLAS's helper stop spinning (see the test above)

    def test_pure_python_items_do_not_read_loaded_libraries(self, monkeypatch: pytest.MonkeyPatch) -> None:
        pytest.importorskip("numpy")  # a BLAS library is loaded: reading it costs 0.4–8 ms
        calls: list[int] = []
        real = sampler_module.blas_threads_loaded

        def counted() -> int:
            calls.append(1)
            return real()

        monkeypatch.setattr(sampler_module, "blas_threads_loaded", counted)
        profile = sample(lambda x: spin(0.00001), list(range(50_000))).profile
        assert profile.cpu_ratio < sampler_module.BLAS_CPU_RATIO
        assert calls == [] and profile.blas_threads == 0


class TestProbeChoice:
    def test_cheap_to_ship_cpu_work_is_not_probed(self) -> None:
        def spin(x: int) -> int:
            total = 0
            for i in range(20_000):
                total += i
            return total

        # Best of three: on a loaded machine the items lose CPU share to preemption (then they look
        # partly waiting, and the probe is informative) or the canary misses its wake-ups; one CI
        # run read 37 items and a two-thread probe.
        samples = [sample(spin, range(2000)) for _ in range(3)]
        unprobed = [s for s in samples if s.n_computed == s.profile.n_sampled]  # no probe items
        assert unprobed, [(s.n_computed, s.profile.n_sampled, s.profile.cpu_ratio) for s in samples]
        for s in unprobed:
            if s.profile.gil_held is None:  # the dry run was too short for the canary
                assert s.profile.thread_speedup is None
            else:
                assert s.profile.thread_speedup == pytest.approx(2 / (1 + s.profile.gil_held))

    def test_the_gil_canary_replaces_the_two_thread_probe(self) -> None:
        payload = b"x" * 4_000_000

        def digest(x: int) -> str:
            return hashlib.sha256(payload).hexdigest()

        profiles = []
        for _ in range(3):  # best of three: another process can delay the canary
            s = sample(digest, range(2000))
            assert s.n_computed == s.profile.n_sampled  # no probe items: the canary read it
            profiles.append(s.profile)
        read = [p for p in profiles if p.gil_held is not None]
        assert read, "the canary never had enough wake-ups"
        assert min(p.gil_held for p in read if p.gil_held is not None) < 0.3
        best = min(read, key=lambda p: p.gil_held or 0.0)
        assert best.thread_speedup == pytest.approx(2 / (1 + (best.gil_held or 0.0)))

    def test_a_long_waiting_run_is_probed(self) -> None:
        # 400 s of serial waiting: the probe (~7 ms) is a small share of even the quickest run
        s = sample(wait, [0.002] * 200_000)
        assert s.profile.is_io_bound
        assert s.profile.thread_speedup is not None
        assert s.profile.probe_threads == sampler_module.WAIT_PROBE_THREADS

    def test_waiting_samples_no_more_than_a_share_of_the_quickest_threaded_run(self) -> None:
        # 1000 × 5 ms: 2 % of 5 s over 16 allowed two items (10 ms); many threads run the rest in
        # ~50 ms, of which 2 % is under one item
        s = sample(wait, [0.005] * 1000)
        assert s.profile.n_sampled == 1

    def test_a_short_waiting_run_is_not_probed(self) -> None:
        # 400 × 5 ms: the probe (~8 ms) would cost a fifth of a ~40 ms run on many threads
        s = sample(wait, [0.005] * 400)
        assert s.profile.is_io_bound
        assert s.profile.thread_speedup is None  # the planner then lets the waits overlap
        assert s.n_done == s.profile.n_sampled == 1

    def test_waiting_on_a_child_processs_cpu_is_probed(self) -> None:
        # subprocess.run of a CPU-bound program waits here while a core works elsewhere: on 16
        # threads it runs no faster than the cores allow, which only the probe shows
        def child(x: int) -> int:
            subprocess.run([sys.executable, "-S", "-c", "sum(range(300_000))"], check=True)
            return x

        s = sample(child, range(100))
        assert s.profile.is_io_bound
        assert s.profile.thread_speedup is not None

    @pytest.mark.skipif(sys.platform == "win32", reason="libc's usleep through ctypes.PyDLL")
    def test_waiting_with_the_gil_held_is_probed(self) -> None:
        libc = ctypes.PyDLL(None)  # a PyDLL call keeps the GIL: these sleeps cannot overlap

        def held_sleep(x: int) -> int:
            libc.usleep(5000)
            return x

        s = sample(held_sleep, range(400))
        assert s.profile.is_io_bound
        assert s.profile.thread_speedup is not None and s.profile.thread_speedup < 2

    @pytest.mark.parametrize(
        ("total", "gil_held", "child_cpu", "evident"),
        [
            (400, 0.0, 0.0, True),  # 400 × 5 ms: the probe is ~22 % of the quickest run
            (2_000_000, 0.0, 0.0, False),  # 10,000 s of waiting: the probe is worth its cost
            (None, 0.0, 0.0, False),  # a stream may run long
            (400, None, 0.0, False),  # the canary did not read the GIL
            (400, 0.9, 0.0, False),  # the waits held the GIL
            (400, 0.0, None, False),  # child processes' CPU unknown
            (400, 0.0, 0.004, False),  # a child process computed during the wait
        ],
    )
    def test_when_the_overlap_is_evident(
        self, total: int | None, gil_held: float | None, child_cpu: float | None, evident: bool
    ) -> None:
        measured = sampler_module._Measured(items=[0], results=[0], durations=[0.005], cpu_times=[0.0])
        assert sampler_module._overlap_evident(measured, total, gil_held, child_cpu) is evident

    def test_costly_to_ship_work_is_probed(self) -> None:
        big = b"x" * 8_000_000

        def echo(x: int) -> bytes:
            total = 0
            for i in range(20_000):
                total += i
            return big

        assert sample(echo, range(2000)).profile.thread_speedup is not None

    def test_unpicklable_function_is_probed(self) -> None:
        lock = threading.Lock()

        def spin(x: int) -> int:
            with lock:
                total = 0
                for i in range(20_000):
                    total += i
                return total

        assert sample(spin, range(2000)).profile.thread_speedup is not None


COUNTER = [0]
SETTINGS: dict[str, int] = {"scale": 2}


def writes_global(x: int) -> int:
    global COUNTER
    COUNTER = [x]
    return x


def reads_mutable_global(x: int) -> int:
    return x * SETTINGS["scale"]


class TestGlobalState:
    def test_writing_a_global_is_named(self) -> None:
        (caveat,) = global_state_caveats(writes_global)
        assert "COUNTER" in caveat and "lost" in caveat

    def test_reading_a_mutable_global_is_named(self) -> None:
        (caveat,) = global_state_caveats(reads_mutable_global)
        assert "SETTINGS" in caveat and "spawn" in caveat

    def test_pure_function_has_none(self) -> None:
        assert global_state_caveats(square) == ()
        assert global_state_caveats(len) == ()

    def test_sample_reports_them(self) -> None:
        s = sample(reads_mutable_global, range(5))
        assert s.process_caveats


def test_sample_repr_is_readable() -> None:
    s = sample(square, range(3))
    assert isinstance(s, Sample)
    assert "Profile(" in repr(s)


class TestHeadStart:
    """A short waiting input runs whole while its first item waits (``sample(head_start=True)``)."""

    @staticmethod
    def napper(calls: list[tuple[int, str]]) -> Callable[[int], int]:
        def nap(x: int) -> int:
            calls.append((x, threading.current_thread().name))
            time.sleep(0.02)
            return x * 10

        return nap

    @pytest.mark.timeout(30)
    def test_the_rest_starts_while_the_first_item_waits(self) -> None:
        calls: list[tuple[int, str]] = []
        s = sample(self.napper(calls), list(range(100)), head_start=True)
        assert s.n_done == 100 and list(s.results) == [x * 10 for x in range(100)]
        assert sorted(x for x, _ in calls) == list(range(100))  # each item once
        assert {name for x, name in calls if x > 0} == {"amorsize-head-start"}
        assert not list(s.rest())  # nothing left for the run
        assert s.profile.is_io_bound  # the first item's CPU is its own thread's, not the starts'
        # the 99 overlapped: ~60× here (one by one would read 1×)
        assert s.profile.probe_threads == 99
        assert s.profile.thread_speedup is not None and s.profile.thread_speedup > 10

    @pytest.mark.parametrize(
        "why",
        [
            "not asked",
            "a generator",
            "not a list, tuple or range",
            "too many items",
            "the first item computes",
            "no probing",
        ],
    )
    def test_no_head_start(self, why: str) -> None:
        calls: list[tuple[int, str]] = []
        nap = self.napper(calls)

        def spin_then_nap(x: int) -> int:
            spin(0.01)
            return nap(x)

        func, data, options = nap, list(range(50)), {"head_start": True}
        if why == "not asked":
            options = {}
        elif why == "a generator":
            data = iter(range(50))  # type: ignore[assignment]
        elif why == "not a list, tuple or range":  # sliced from another thread: built-ins only
            data = collections.UserList(range(50))  # type: ignore[assignment]
        elif why == "too many items":
            data = list(range(sampler_module.HEAD_START_ITEMS + 2))
        elif why == "the first item computes":
            func = spin_then_nap
        else:
            options["probe_threads"] = False
        s = sample(func, data, **options)
        assert s.n_done < 20, why
        assert all(name != "amorsize-head-start" for _, name in calls)

    @pytest.mark.timeout(30)
    def test_not_with_too_little_memory_for_the_rest(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import amorsize.measure.machine as machine_module

        monkeypatch.setattr(machine_module, "memory_info", lambda: (49 * 64 * 2**20, None))
        calls: list[tuple[int, str]] = []
        assert sample(self.napper(calls), list(range(50)), head_start=True).n_done == 50  # 49 fit
        monkeypatch.setattr(machine_module, "memory_info", lambda: (48 * 64 * 2**20, None))
        calls.clear()
        assert sample(self.napper(calls), list(range(50)), head_start=True).n_done < 20
        assert all(name != "amorsize-head-start" for _, name in calls)

    @pytest.mark.timeout(30)
    def test_a_first_item_waiting_on_a_child_process_starts_nothing(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # watched once the child runs and the caller only waits for it (forking took its CPU)
        monkeypatch.setattr(sampler_module, "HEAD_START_AFTER", 0.02)
        calls: list[int] = []

        def child(x: int) -> int:
            calls.append(x)
            subprocess.run([sys.executable, "-S", "-c", "import time; time.sleep(0.05)"], check=True)
            return x

        s = sample(child, list(range(20)), head_start=True)
        assert s.n_done < 20
        assert len(calls) == s.n_done

    @pytest.mark.timeout(30)
    @pytest.mark.parametrize("error", [KeyError, SystemExit])  # SystemExit would end its thread only
    def test_a_failing_item_of_the_head_start_is_named(self, error: type[BaseException]) -> None:
        def nap_or_fail(x: int) -> int:
            # a long first wait: the head start begins even if another process delays its watcher
            # (without it, the sample may end before item 37)
            time.sleep(0.1 if x == 0 else 0.01)
            if x == 37:
                raise error(x)
            return x

        with pytest.raises(SamplingError) as info:
            sample(nap_or_fail, list(range(60)), head_start=True)
        assert info.value.index == 37
        assert isinstance(info.value.__cause__, error)

    def test_child_pids_sees_a_running_child(self) -> None:
        before = sampler_module._child_pids()
        if before is None:
            pytest.skip("no /proc/self/task/*/children here")
        child = subprocess.Popen([sys.executable, "-S", "-c", "import time; time.sleep(5)"])
        try:
            assert child.pid in (sampler_module._child_pids() or set())
        finally:
            child.kill()
            child.wait()
        assert child.pid not in (sampler_module._child_pids() or set())
