"""Tests for the Dask cluster probe (amorsize.measure.cluster): fakes for the arithmetic and the cache,
one real LocalCluster on loopback for the measurements.

Importing ``distributed`` changes how exceptions pickle in this process
(``tblib.pickling_support.install()``) and a LocalCluster leaves ``OMP_NUM_THREADS=1`` and friends in
``os.environ``; the cluster fixture undoes both when the module is done, so other modules' tests see
the defaults.
"""

from __future__ import annotations

import copyreg
import doctest
import logging
import math
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from amorsize.measure import cluster as cluster_module
from amorsize.measure.cluster import (
    BURST_TASKS,
    CLUSTER_CALIBRATION_VERSION,
    CLUSTER_NAMESPACE,
    LATENCY_ROUNDS,
    PAYLOAD_BYTES,
    PAYLOAD_ROUNDS,
    UNLIMITED_MEMORY,
    ClusterCosts,
    ClusterShape,
    calibrate_cluster,
    cluster_machine,
    cluster_shape,
    probe_cluster,
)
from amorsize.store import Store


def test_docstring_examples() -> None:
    assert doctest.testmod(cluster_module, raise_on_error=False).failed == 0


def worker(nthreads: int, limit: int, used: int) -> dict[str, Any]:
    return {"nthreads": nthreads, "memory_limit": limit, "metrics": {"memory": used}}


class FakeClient:
    """Answers like a ``distributed.Client`` without a cluster; every task finishes at once."""

    def __init__(self, workers: list[dict[str, Any]], scheduler_id: str = "Scheduler-1") -> None:
        self.workers = workers
        self.scheduler_id = scheduler_id
        self.submitted: list[str] = []

    def scheduler_info(self, n_workers: int = 5) -> dict[str, Any]:
        assert n_workers == -1, "every worker must be listed"
        workers = {f"tcp://10.0.0.{i}:1234": w for i, w in enumerate(self.workers)}
        return {"address": "tcp://10.0.0.99:8786", "id": self.scheduler_id, "workers": workers}

    def nthreads(self) -> dict[str, int]:
        return {str(i): w["nthreads"] for i, w in enumerate(self.workers)}

    def submit(self, func: Callable[..., Any], *args: Any, pure: bool = True) -> Any:
        assert pure is False, "probe tasks must never be deduplicated"
        self.submitted.append(func.__name__)
        value = func(*args)

        class Done:
            def result(self, timeout: float | None = None) -> Any:
                return value

        return Done()

    def gather(self, futures: list[Any]) -> list[Any]:
        return [f.result() for f in futures]


class TestClusterShape:
    def test_adds_up_the_workers(self) -> None:
        shape = cluster_shape(FakeClient([worker(4, 8 * 2**30, 2**30), worker(2, 8 * 2**30, 2**29)]))
        assert shape == ClusterShape("tcp://10.0.0.99:8786", "Scheduler-1", 2, 6, 16 * 2**30, 3 * 2**29)

    def test_a_worker_without_memory_limit_means_no_limit(self) -> None:
        shape = cluster_shape(FakeClient([worker(1, 0, 10), worker(1, 2**30, 10)]))
        assert shape.memory_limit is None
        assert cluster_machine(shape, ClusterCosts(1e-3, 1e-3, 1e8)).available_memory == UNLIMITED_MEMORY

    def test_no_workers_yet_still_gives_one_thread(self) -> None:
        shape = cluster_shape(FakeClient([]))
        assert (shape.n_workers, shape.threads, shape.memory_limit) == (0, 1, None)


class TestClusterMachine:
    def test_cores_are_threads_and_startup_is_free(self) -> None:
        shape = ClusterShape("tcp://a:1", "s", 3, 12, 30 * 2**30, 6 * 2**30)
        machine = cluster_machine(shape, ClusterCosts(0.01, 0.002, 2e8, source="stored"))
        assert (machine.usable_cores, machine.physical_cores, machine.logical_cores) == (12, 12, 12)
        assert machine.available_memory == 24 * 2**30 and machine.memory_limit == 30 * 2**30
        costs = machine.costs
        assert (costs.process_startup, costs.process_task_overhead, costs.pipe_bandwidth) == (0.0, 0.002, 2e8)
        assert costs.source == "stored" and machine.start_method == "dask"


class TestCalibrate:
    def test_arithmetic_with_a_fake_clock(self) -> None:
        # each timed section reads the clock twice; make latency 10 ms, the burst 0.5 s, an echo 30 ms
        sections = [0.010] * LATENCY_ROUNDS + [0.5] + [0.030] * PAYLOAD_ROUNDS
        ticks: list[float] = []
        now = 0.0
        for length in sections:
            ticks += [now, now + length]
            now += length + 1.0
        clock = iter(ticks).__next__
        client = FakeClient([worker(1, 2**30, 0), worker(1, 2**30, 0)])
        costs = calibrate_cluster(client, clock=clock)
        assert costs.task_latency == pytest.approx(0.010)
        assert costs.task_overhead == pytest.approx(0.5 / BURST_TASKS)
        assert costs.bandwidth == pytest.approx(2 * PAYLOAD_BYTES / 0.020)
        assert costs.source == "measured"
        expected = 2 + LATENCY_ROUNDS + BURST_TASKS + 1 + PAYLOAD_ROUNDS  # warm-ups included
        assert len(client.submitted) == expected


class TestProbeCluster:
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[Store]:
        with Store(tmp_path / "store.sqlite3") as made:
            yield made

    def counting(self, calls: list[int]) -> Callable[[Any], ClusterCosts]:
        def calibrate(client: Any) -> ClusterCosts:
            calls.append(1)
            return ClusterCosts(0.004, 0.001 * len(calls), 3e8)

        return calibrate

    def test_measured_once_then_read_back(self, store: Store) -> None:
        calls: list[int] = []
        client = FakeClient([worker(2, 2**30, 0)])
        first = probe_cluster(client, store=store, calibrate=self.counting(calls))
        second = probe_cluster(client, store=store, calibrate=self.counting(calls))
        assert len(calls) == 1
        assert first.costs.source == "measured" and second.costs.source == "stored"
        assert second.costs.process_task_overhead == first.costs.process_task_overhead
        record = store.get(CLUSTER_NAMESPACE, "tcp://10.0.0.99:8786")
        assert record["version"] == CLUSTER_CALIBRATION_VERSION and record["threads"] == 2

    def test_workers_are_read_live(self, store: Store) -> None:
        calls: list[int] = []
        probe_cluster(FakeClient([worker(2, 2**30, 0)]), store=store, calibrate=self.counting(calls))
        grown = probe_cluster(
            FakeClient([worker(2, 2**30, 0)] * 4), store=store, calibrate=self.counting(calls)
        )
        assert grown.usable_cores == 8 and len(calls) == 1

    def test_a_new_scheduler_at_the_same_address_is_measured_again(self, store: Store) -> None:
        calls: list[int] = []
        probe_cluster(
            FakeClient([worker(1, 2**30, 0)], "Scheduler-1"), store=store, calibrate=self.counting(calls)
        )
        probe_cluster(
            FakeClient([worker(1, 2**30, 0)], "Scheduler-2"), store=store, calibrate=self.counting(calls)
        )
        assert len(calls) == 2

    def test_refresh_measures_again(self, store: Store) -> None:
        calls: list[int] = []
        client = FakeClient([worker(1, 2**30, 0)])
        probe_cluster(client, store=store, calibrate=self.counting(calls))
        probe_cluster(client, store=store, refresh=True, calibrate=self.counting(calls))
        assert len(calls) == 2

    @pytest.mark.parametrize(
        "record",
        [
            "junk",
            {"version": CLUSTER_CALIBRATION_VERSION, "scheduler_id": "Scheduler-1", "task_latency": 0.1},
            {
                "version": CLUSTER_CALIBRATION_VERSION,
                "scheduler_id": "Scheduler-1",
                "task_latency": 0.1,
                "task_overhead": -1.0,
                "bandwidth": 1e8,
            },
            {
                "version": 0,
                "scheduler_id": "Scheduler-1",
                "task_latency": 1,
                "task_overhead": 1,
                "bandwidth": 1,
            },
        ],
    )
    def test_bad_records_are_measured_over(self, store: Store, record: Any) -> None:
        store.put(CLUSTER_NAMESPACE, "tcp://10.0.0.99:8786", record)
        calls: list[int] = []
        probe_cluster(FakeClient([worker(1, 2**30, 0)]), store=store, calibrate=self.counting(calls))
        assert len(calls) == 1


@pytest.fixture(scope="module")
def local_client() -> Iterator[Any]:
    """A 2-worker LocalCluster on 127.0.0.1 for this module (logs silenced)."""
    pickling, environ = dict(copyreg.dispatch_table), dict(os.environ)  # restored: module docstring
    distributed = pytest.importorskip("distributed")
    quiet = logging.getLogger("distributed")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",  # any free port: never clash with another cluster
            silence_logs=logging.CRITICAL,
        ) as cluster,
        distributed.Client(cluster, set_as_default=False) as client,
    ):
        yield client
    quiet.setLevel(level)
    copyreg.dispatch_table.clear()
    copyreg.dispatch_table.update(pickling)
    os.environ.clear()
    os.environ.update(environ)


@pytest.mark.timeout(60)
class TestOnALocalCluster:
    def test_measures_positive_finite_costs(self, local_client: Any) -> None:
        costs = calibrate_cluster(local_client)
        for figure in (costs.task_latency, costs.task_overhead, costs.bandwidth):
            assert math.isfinite(figure) and figure > 0
        assert costs.task_overhead < 1.0 and costs.bandwidth > 1e6  # loopback: far better than this

    def test_probe_gives_the_clusters_machine(self, local_client: Any, tmp_path: Path) -> None:
        with Store(tmp_path / "store.sqlite3") as store:
            machine = probe_cluster(local_client, store=store)
            assert machine.usable_cores == 2 and machine.start_method == "dask"
            assert 0 < machine.available_memory < sys.maxsize
            address = local_client.scheduler.address
            assert store.get(CLUSTER_NAMESPACE, address)["scheduler_id"].startswith("Scheduler-")
