"""Tests for the cost model (amorsize.core.model): made-up numbers and Hypothesis properties."""

from __future__ import annotations

import doctest
import math

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from model_factories import ZERO_COSTS, make_machine, make_profile

from amorsize.core import model
from amorsize.core.model import (
    PROBE_NOISE,
    SMT_GAIN,
    WORKER_BASE_MEMORY,
    Workload,
    blas_threads_per_worker,
    compute_bounds,
    cpu_capacity,
    item_wall_in_worker,
    memory_ceiling,
    per_worker_memory,
    predict,
    predict_workload,
)
from amorsize.core.types import Candidate, Machine, MachineCosts, Profile
from amorsize.errors import ConfigurationError


def test_docstring_examples() -> None:
    assert doctest.testmod(model, raise_on_error=False).failed == 0


class TestWorkload:
    def test_summarises_profile(self) -> None:
        w = Workload.from_profile(make_profile(0.02, in_bytes=300, out_bytes=700, serialize=2e-4, peak=5))
        assert w.mean_duration == pytest.approx(0.02)
        assert w.payload_bytes == pytest.approx(1000)
        assert w.serialize_seconds == pytest.approx(2e-4)
        assert w.cv == 0.0
        assert w.peak_memory_bytes == 5

    def test_non_finite_measurements_read_as_zero(self) -> None:
        w = Workload.from_profile(make_profile(durations=(math.nan, math.nan), serialize=math.inf))
        assert w.mean_duration == 0.0
        assert w.serialize_seconds == 0.0

    def test_gil_bound_item_is_fully_serialised(self) -> None:
        assert Workload.from_profile(make_profile(thread_speedup=1.0)).serial_fraction == pytest.approx(1.0)

    def test_gil_releasing_item_is_not_serialised(self) -> None:
        assert Workload.from_profile(make_profile(thread_speedup=2.0)).serial_fraction == 0.0

    def test_unprobed_item_serialises_its_cpu_part_only(self) -> None:
        w = Workload.from_profile(make_profile(cpu_ratio=0.3, thread_speedup=None))
        assert w.serial_fraction == pytest.approx(0.3)

    def test_probe_noise_is_bounded_by_cpu_time(self) -> None:
        # 2/1.9 − 1 ≈ 0.053 read by the probe, but only 2 % of the item is CPU: the GIL holds no more.
        w = Workload.from_profile(make_profile(cpu_ratio=0.02, thread_speedup=1.9))
        assert w.serial_fraction == pytest.approx(0.02)

    def test_serialisation_beyond_the_noise_is_kept(self) -> None:
        w = Workload.from_profile(make_profile(cpu_ratio=0.05, thread_speedup=1.0))
        assert w.serial_fraction == pytest.approx(1.0 - PROBE_NOISE)

    def test_free_threaded_does_not_blame_cpu_time(self) -> None:
        w = Workload.from_profile(make_profile(cpu_ratio=1.0, thread_speedup=1.9), free_threaded=True)
        assert w.serial_fraction == 0.0
        measured = Workload.from_profile(make_profile(thread_speedup=1.0), free_threaded=True)
        assert measured.serial_fraction == pytest.approx(1.0 - PROBE_NOISE)  # measured, not assumed away

    def test_a_canary_reading_is_the_serial_fraction(self) -> None:
        from dataclasses import replace

        profile = replace(make_profile(cpu_ratio=1.0, thread_speedup=2 / 1.4), gil_held=0.4)
        assert Workload.from_profile(profile).serial_fraction == pytest.approx(0.4)  # no noise band
        assert Workload.from_profile(profile, free_threaded=True).serial_fraction < 0.4  # no GIL there

    def test_wide_probe_reads_amdahl_with_its_thread_count(self) -> None:
        from dataclasses import replace

        # 16 threads at 8×: f = (16/8 − 1)/15 = 1/15, kept exactly when the CPU time explains it
        wide = replace(make_profile(cpu_ratio=1.0, thread_speedup=8.0), probe_threads=16)
        assert Workload.from_profile(wide).serial_fraction == pytest.approx(1 / 15)
        # the same reading from two threads would mean threads barely help (f = 2/8 − 1 < 0 → 0)
        linear = replace(make_profile(cpu_ratio=0.0, thread_speedup=16.0), probe_threads=16)
        assert Workload.from_profile(linear).serial_fraction == 0.0

    def test_threads_slower_than_one_serialise_more_than_the_item(self) -> None:
        assert Workload.from_profile(make_profile(thread_speedup=0.5)).serial_fraction > 1.0


class TestBlasThreadsPerWorker:
    def test_divides_usable_cores(self) -> None:
        machine = make_machine(8)
        assert [blas_threads_per_worker(machine, j) for j in (1, 2, 3, 4, 8, 16)] == [8, 4, 2, 2, 1, 1]

    @given(usable=st.integers(1, 256), n_jobs=st.integers(1, 256))
    def test_never_oversubscribes(self, usable: int, n_jobs: int) -> None:
        threads = blas_threads_per_worker(make_machine(usable), n_jobs)
        assert threads >= 1
        assert n_jobs > usable or n_jobs * threads <= usable


class TestPerWorkerMemory:
    def test_base_plus_peak(self) -> None:
        assert per_worker_memory(make_profile(peak=10 * 2**20)) == WORKER_BASE_MEMORY + 10 * 2**20

    def test_unknown_peak_is_the_base(self) -> None:
        assert per_worker_memory(make_profile(peak=0)) == WORKER_BASE_MEMORY


class TestMemoryCeiling:
    def test_processes(self) -> None:
        w = Workload.from_profile(make_profile(peak=WORKER_BASE_MEMORY))
        assert memory_ceiling(w, make_machine(memory=10 * WORKER_BASE_MEMORY), "processes") == 5

    def test_threads_share_the_process(self) -> None:
        w = Workload.from_profile(make_profile(peak=2**20))
        assert memory_ceiling(w, make_machine(memory=64 * 2**20), "threads") == 64
        assert memory_ceiling(Workload.from_profile(make_profile()), make_machine(), "threads") is None

    def test_serial_has_no_ceiling(self) -> None:
        assert memory_ceiling(Workload.from_profile(make_profile()), make_machine(), "serial") is None

    def test_dask_threads_cost_only_the_items_growth(self) -> None:
        # the cluster's worker processes already run: their memory is spent, not planned
        w = Workload.from_profile(make_profile(peak=2**20))
        assert memory_ceiling(w, make_machine(memory=64 * 2**20), "dask") == 64
        assert memory_ceiling(Workload.from_profile(make_profile()), make_machine(), "dask") is None


class TestCpuCapacity:
    def test_physical_cores_first(self) -> None:
        machine = make_machine(8, physical=4)
        assert cpu_capacity(machine, 3) == 3
        assert cpu_capacity(machine, 4) == 4
        assert cpu_capacity(machine, 6) == pytest.approx(4 + 2 * SMT_GAIN)
        assert cpu_capacity(machine, 100) == pytest.approx(4 + 4 * SMT_GAIN)

    def test_no_smt_gain(self) -> None:
        assert cpu_capacity(make_machine(8, physical=4), 8, smt_gain=0.0) == 4

    @given(usable=st.integers(1, 128), physical=st.integers(0, 128), n_jobs=st.integers(1, 512))
    def test_between_one_and_usable(self, usable: int, physical: int, n_jobs: int) -> None:
        capacity = cpu_capacity(make_machine(usable, physical=min(physical, usable)), n_jobs)
        assert 1 <= capacity <= min(n_jobs, usable)


class TestItemWallInWorker:
    def test_blas_items_slow_down_when_threads_are_limited(self) -> None:
        w = Workload.from_profile(make_profile(0.1, cpu_ratio=4.0, blas=8))
        machine = make_machine(8)
        assert item_wall_in_worker(w, machine, "processes", 2) == pytest.approx(0.1)  # 4 threads each
        assert item_wall_in_worker(w, machine, "processes", 4) == pytest.approx(0.2)  # 2 threads each
        assert item_wall_in_worker(w, machine, "processes", 8) == pytest.approx(0.4)  # 1 thread each
        # a threaded run is capped as a whole: 8 threads × 1 BLAS thread
        assert item_wall_in_worker(w, machine, "threads", 8) == pytest.approx(0.4)
        assert item_wall_in_worker(w, machine, "threads", 2) == pytest.approx(0.1)

    def test_measured_capped_duration_replaces_the_cpu_estimate(self) -> None:
        from dataclasses import replace

        # 250² matmuls: 1 ms on 2 BLAS threads (CPU 2 ms), 1.1 ms on one: CPU overstated the gain
        profile = replace(
            make_profile(0.001, cpu_ratio=2.0, blas=2, thread_speedup=1.8),
            capped_duration=0.0011,
            capped_blas_threads=1,
        )
        w = Workload.from_profile(profile)
        machine = make_machine(2)
        assert item_wall_in_worker(w, machine, "threads", 2) == pytest.approx(0.0011)
        assert item_wall_in_worker(w, machine, "processes", 2) == pytest.approx(0.0011)  # GIL released
        workers, cpu, _ = compute_bounds(w, machine, "threads", 2, 2, 100)
        assert workers == pytest.approx(0.055) and cpu == pytest.approx(0.055)  # not 100 × 2 ms / 2
        # measured under another cap: the CPU-time estimate again
        assert item_wall_in_worker(w, make_machine(8), "threads", 2) == pytest.approx(0.001)
        gil_bound = Workload.from_profile(replace(profile, thread_speedup=1.0))
        assert item_wall_in_worker(gil_bound, machine, "processes", 2) == pytest.approx(0.002)

    def test_single_threaded_items_unchanged(self) -> None:
        w = Workload.from_profile(make_profile(0.1))
        assert item_wall_in_worker(w, make_machine(8), "processes", 8) == pytest.approx(0.1)
        assert item_wall_in_worker(w, make_machine(8), "dask", 8) == pytest.approx(0.1)

    def test_dask_workers_run_blas_items_on_one_thread(self) -> None:
        w = Workload.from_profile(make_profile(0.1, cpu_ratio=4.0, blas=8))
        for n_jobs in (1, 2, 8):
            assert item_wall_in_worker(w, make_machine(8), "dask", n_jobs) == pytest.approx(0.4)


class TestComputeBounds:
    def test_processes_have_no_serialised_bound(self) -> None:
        w = Workload.from_profile(make_profile(0.01, thread_speedup=1.0))
        workers, cpu, serialised = compute_bounds(w, make_machine(4), "processes", 4, 4, 100)
        assert workers == pytest.approx(0.25)
        assert cpu == pytest.approx(0.25)
        assert serialised == 0.0

    def test_threads_of_gil_bound_items_serialise(self) -> None:
        w = Workload.from_profile(make_profile(0.01, thread_speedup=1.0))
        assert compute_bounds(w, make_machine(4), "threads", 4, 4, 100)[2] == pytest.approx(1.0)


class TestPredict:
    def test_serial_is_items_times_mean(self) -> None:
        p = predict(make_profile(0.01), make_machine(), Candidate("serial", 1, 1), 1000)
        assert p.compute == pytest.approx(10.0)
        assert p.startup == p.dispatch == p.transfer == p.imbalance == 0.0
        assert p.total == pytest.approx(10.0)

    def test_no_items_cost_nothing(self) -> None:
        p = predict(make_profile(), make_machine(), Candidate("processes", 4, 10), 0)
        assert p.total == 0.0

    def test_process_breakdown(self) -> None:
        profile = make_profile(0.01, in_bytes=400_000, out_bytes=100_000, serialize=1e-4)
        p = predict(profile, make_machine(4), Candidate("processes", 4, 25), 1000)
        assert p.startup == pytest.approx(0.05)  # 4 workers boot in one wave on 4 cores
        assert p.dispatch == pytest.approx(40 * 100e-6)
        assert p.transfer == pytest.approx(1000 * (1e-4 + 500_000 / 500e6))
        # the cores also pickle and copy on both ends of the pipe: 10 s of items + 2 × 1.1 s on 4
        assert p.compute == pytest.approx((10.0 + 2 * p.transfer) / 4)
        assert p.imbalance == pytest.approx(0.0)

    def test_transfer_takes_core_time_only_from_local_processes(self) -> None:
        light = make_profile(0.01)
        heavy = make_profile(0.01, out_bytes=5_000_000, serialize=1e-3)
        machine = make_machine(2)
        for kind in ("threads", "dask"):
            a = predict(light, machine, Candidate(kind, 2, 25), 1000)
            b = predict(heavy, machine, Candidate(kind, 2, 25), 1000)
            assert b.compute == pytest.approx(a.compute)
        a = predict(light, machine, Candidate("processes", 2, 25), 1000)
        b = predict(heavy, machine, Candidate("processes", 2, 25), 1000)
        assert b.compute - b.transfer == pytest.approx(a.compute - a.transfer)  # 2 × transfer on 2 cores

    def test_workers_beyond_the_cores_boot_in_waves(self) -> None:
        p = predict(make_profile(), make_machine(2), Candidate("processes", 5, 1), 100)
        assert p.startup == pytest.approx(3 * 0.05)

    def test_warm_workers_skip_startup(self) -> None:
        machine, profile = make_machine(4), make_profile()
        cold = predict(profile, machine, Candidate("processes", 4, 10), 100)
        warm = predict(profile, machine, Candidate("processes", 4, 10), 100, warm_workers=4)
        assert warm.startup == 0.0
        assert warm.total == pytest.approx(cold.total - cold.startup)
        threads = predict(profile, machine, Candidate("threads", 8, 10), 100, warm_workers=3)
        assert threads.startup == pytest.approx(5 * 100e-6)

    def test_threads_transfer_nothing(self) -> None:
        profile = make_profile(in_bytes=10**8, serialize=1.0)
        assert predict(profile, make_machine(), Candidate("threads", 4, 1), 100).transfer == 0.0

    def test_zero_bandwidth_is_guarded(self) -> None:
        costs = MachineCosts(0.0, 0.0, 0.0, 0.0, 0.0)
        p = predict(make_profile(in_bytes=10**6), make_machine(costs=costs), Candidate("processes", 2, 1), 10)
        assert math.isfinite(p.transfer) and p.transfer > 0

    def test_gil_bound_threads_do_not_speed_up(self) -> None:
        profile, machine = make_profile(0.01, thread_speedup=1.0), make_machine(8)
        threads = predict(profile, machine, Candidate("threads", 8, 10), 1000)
        assert threads.compute == pytest.approx(10.0)

    def test_waiting_items_overlap_on_threads(self) -> None:
        profile = make_profile(0.05, cpu_ratio=0.01, thread_speedup=2.0)
        p = predict(profile, make_machine(2), Candidate("threads", 50, 1), 1000)
        assert p.compute == pytest.approx(1000 * 0.05 / 50)

    def test_cpu_work_cannot_exceed_the_cores(self) -> None:
        profile = make_profile(0.01, thread_speedup=2.0)
        p = predict(profile, make_machine(4), Candidate("threads", 16, 1), 1600)
        assert p.compute == pytest.approx(1600 * 0.01 / 4)

    def test_blas_processes_never_beat_the_cores(self) -> None:
        # each item keeps 4 cores busy for 0.1 s: 0.4 core-seconds; 8 cores can do 20 items a second
        profile = make_profile(0.1, cpu_ratio=4.0, blas=8)
        for n_jobs in (1, 2, 4, 8, 16):
            p = predict(profile, make_machine(8, costs=ZERO_COSTS), Candidate("processes", n_jobs, 1), 800)
            assert p.compute >= 800 * 0.4 / 8 - 1e-9

    def test_dask_is_modelled_as_processes(self) -> None:
        # apart from the transfer's time on the cores: a Dask client is not one of its cluster's cores
        profile, machine = make_profile(in_bytes=0, out_bytes=0, serialize=0.0), make_machine()
        dask = predict(profile, machine, Candidate("dask", 4, 10), 1000)
        processes = predict(profile, machine, Candidate("processes", 4, 10), 1000)
        assert dask.breakdown() == processes.breakdown()

    def test_dask_on_a_cluster_machine(self) -> None:
        # a 16-thread cluster: no start-up, 2 ms per task, 100 MB/s (figures as cluster_machine makes them)
        cluster = make_machine(16, costs=MachineCosts(0.0, 2e-3, 100e6, 0.0, 2e-3))
        p = predict(
            make_profile(0.01, in_bytes=10_000, out_bytes=0, serialize=0.0),
            cluster,
            Candidate("dask", 16, 20),
            3200,
        )
        assert p.startup == 0.0
        assert p.dispatch == pytest.approx(160 * 2e-3)
        assert p.transfer == pytest.approx(3200 * 10_000 / 100e6)
        assert p.compute == pytest.approx(3200 * 0.01 / 16)

    def test_partial_last_round_costs_time(self) -> None:
        profile, machine = make_profile(0.01), make_machine(4, costs=ZERO_COSTS)
        even = predict(profile, machine, Candidate("processes", 4, 25), 1000)  # 40 chunks, 10 rounds
        uneven = predict(profile, machine, Candidate("processes", 4, 30), 1000)  # 34 chunks
        assert even.imbalance == 0.0
        assert uneven.imbalance > 0.0

    def test_heterogeneous_items_leave_a_longer_tail(self) -> None:
        machine = make_machine(4, costs=ZERO_COSTS)
        flat = make_profile(durations=(0.01,) * 8)
        uneven = make_profile(durations=(0.001, 0.019) * 4)
        candidate = Candidate("processes", 4, 25)
        assert (
            predict(uneven, machine, candidate, 1000).imbalance
            > predict(flat, machine, candidate, 1000).imbalance
        )

    def test_tail_grows_with_chunk_size_for_uneven_items(self) -> None:
        profile, machine = make_profile(durations=(0.001, 0.019) * 4), make_machine(4)
        tails = [
            predict(profile, machine, Candidate("processes", 4, cs), 10_000).imbalance for cs in (5, 50, 500)
        ]
        assert tails == sorted(tails)
        assert tails[0] < tails[-1]

    def test_tail_is_at_least_the_longest_items_excess(self) -> None:
        profile = make_profile(durations=(0.01,) * 9 + (1.0,))
        p = predict(profile, make_machine(4), Candidate("processes", 4, 1), 1000)
        assert p.imbalance >= profile.max_duration - profile.mean_duration

    def test_one_worker_has_no_tail(self) -> None:
        profile = make_profile(durations=(0.001, 0.5))
        assert predict(profile, make_machine(), Candidate("processes", 1, 3), 100).imbalance == 0.0

    @pytest.mark.parametrize(
        ("candidate", "n_items", "warm", "message"),
        [
            (Candidate("processes", 0, 1), 10, 0, "n_jobs must be >= 1 (got 0)"),
            (Candidate("threads", 2, 0), 10, 0, "chunksize must be >= 1 (got 0)"),
            (Candidate("threads", 2, 1), -1, 0, "n_items must be >= 0 (got -1)"),
            (Candidate("threads", 2, 1), 1, -2, "warm_workers must be >= 0 (got -2)"),
            (Candidate("gpu", 2, 1), 1, 0, "executor must be one of"),  # type: ignore[arg-type]
        ],
    )
    def test_rejects_bad_arguments(self, candidate: Candidate, n_items: int, warm: int, message: str) -> None:
        with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace(")", r"\)")):
            predict(make_profile(), make_machine(), candidate, n_items, warm_workers=warm)

    def test_workload_and_profile_agree(self) -> None:
        profile, machine, candidate = make_profile(0.003), make_machine(), Candidate("processes", 3, 7)
        assert predict(profile, machine, candidate, 500) == predict_workload(
            Workload.from_profile(profile), machine, candidate, 500
        )


# ---- properties

finite = st.floats(min_value=0.0, max_value=10.0, allow_nan=False, allow_infinity=False)

profiles = st.builds(
    make_profile,
    durations=st.lists(finite, min_size=1, max_size=12).map(tuple),
    cpu_ratio=st.floats(0.0, 16.0),
    thread_speedup=st.none() | st.floats(0.0, 4.0),
    in_bytes=st.integers(0, 10**9),
    out_bytes=st.integers(0, 10**9),
    serialize=finite,
    peak=st.integers(0, 2**36),
    blas=st.integers(0, 64),
    free_threaded=st.booleans(),
)
costs = st.builds(
    MachineCosts,
    process_startup=finite,
    process_task_overhead=finite,
    pipe_bandwidth=st.floats(0.0, 1e12),
    thread_startup=finite,
    thread_task_overhead=finite,
)


@st.composite
def machines(draw: st.DrawFn) -> Machine:
    usable = draw(st.integers(1, 128))
    logical = draw(st.integers(usable, 256))
    return make_machine(
        usable,
        physical=draw(st.integers(1, usable)),
        logical=logical,
        memory=draw(st.integers(0, 2**40)),
        costs=draw(costs),
        free_threaded=draw(st.booleans()),
    )


candidates = st.builds(
    Candidate,
    executor=st.sampled_from(["serial", "threads", "processes", "dask"]),
    n_jobs=st.integers(1, 512),
    chunksize=st.integers(1, 10**6),
)


@settings(max_examples=100, deadline=None)
@given(profile=profiles, machine=machines(), candidate=candidates, n_items=st.integers(0, 10**7))
def test_breakdown_is_finite_non_negative_and_sums_to_total(
    profile: Profile, machine: Machine, candidate: Candidate, n_items: int
) -> None:
    p = predict(profile, machine, candidate, n_items, warm_workers=0)
    parts = p.breakdown()
    assert all(math.isfinite(v) and v >= 0 for v in parts.values())
    assert math.isclose(sum(parts.values()), p.total)
    assert p.candidate == candidate


@settings(max_examples=100, deadline=None)
@given(
    d=finite,
    cpu_ratio=st.floats(0.0, 16.0),
    thread_speedup=st.none() | st.floats(0.0, 4.0),
    blas=st.integers(0, 64),
    machine=machines(),
    candidate=candidates,
    n_items=st.integers(0, 10**6),
)
@example(  # shipping counted in the workers' bound but not in their chunks' durations broke this
    d=1.0,
    cpu_ratio=0.0,
    thread_speedup=None,
    blas=0,
    machine=make_machine(1, memory=0, costs=ZERO_COSTS),
    candidate=Candidate("processes", 2, 2),
    n_items=2,
)
def test_more_items_of_equal_duration_never_take_less_time(
    d: float,
    cpu_ratio: float,
    thread_speedup: float | None,
    blas: int,
    machine: Machine,
    candidate: Candidate,
    n_items: int,
) -> None:
    profile = make_profile(d, cpu_ratio=cpu_ratio, thread_speedup=thread_speedup, blas=blas)
    fewer = predict(profile, machine, candidate, n_items)
    more = predict(profile, machine, candidate, n_items + 1)
    assert more.total >= fewer.total - 1e-9 * max(1.0, fewer.total)


@settings(max_examples=100, deadline=None)
@given(
    d=st.floats(1e-6, 1.0),
    cores=st.integers(1, 64),
    data=st.data(),
)
def test_zero_overheads_give_linear_speedup_up_to_the_cores(
    d: float, cores: int, data: st.DataObject
) -> None:
    """No costs, no bytes, CV 0, CPU-bound: k processes run k·m items in exactly 1/k of the serial time."""
    profile = make_profile(d, in_bytes=0, out_bytes=0, serialize=0.0)
    machine = make_machine(cores, costs=ZERO_COSTS)
    k = data.draw(st.integers(1, cores), label="n_jobs")
    rounds = data.draw(st.integers(1, 50), label="rounds")
    chunksize = data.draw(st.integers(1, 50), label="chunksize")
    n = k * rounds * chunksize
    serial = predict(profile, machine, Candidate("serial", 1, 1), n)
    parallel = predict(profile, machine, Candidate("processes", k, chunksize), n)
    assert parallel.total == pytest.approx(serial.total / k, rel=1e-9)


@settings(max_examples=100, deadline=None)
@given(profile=profiles, machine=machines(), n_items=st.integers(1, 10**6), chunksize=st.integers(1, 1000))
def test_processes_never_use_more_cpu_than_the_cores(
    profile: Profile, machine: Machine, n_items: int, chunksize: int
) -> None:
    work = n_items * profile.cpu_ratio * Workload.from_profile(profile).mean_duration
    for n_jobs in (1, machine.physical_cores, machine.usable_cores, 2 * machine.usable_cores):
        p = predict(profile, machine, Candidate("processes", n_jobs, chunksize), n_items)
        assert p.compute >= work / machine.usable_cores * (1 - 1e-9)
