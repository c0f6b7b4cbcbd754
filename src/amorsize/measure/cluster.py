"""What a Dask cluster offers a run: its workers and threads, and its *measured* per-task and transfer costs.

:func:`probe_cluster` turns a ``distributed.Client`` into a :class:`~amorsize.core.types.Machine` that
the planner uses for the ``"dask"`` executor: ``usable_cores`` is the total of worker threads, memory
is what the workers' limits leave, and the costs are measured against that cluster by
:func:`calibrate_cluster`, then kept in the store (namespace :data:`CLUSTER_NAMESPACE`, one record per
scheduler address) so later runs reuse them::

    client (this process)                      scheduler                  workers
    ─────────────────────                      ─────────                  ───────
    scheduler_info() ──────────────────────►   workers, threads, memory limits and use
    warm-up: one no-op task per thread ────►   ─────────────────────────► (loads this module)
    latency: 5 no-op tasks, one at a time  ►   ─────────────────────────► round trip, median
    burst: 50 no-op tasks at once ─────────►   ─────────────────────────► per-task = elapsed / 50
    payload: 4 MiB echoed (after a warm-up) ►  ─────────────────────────► bandwidth = 2 × 4 MiB /
                                                                          (elapsed − latency), median of 3

On the 2-core dev VM, against a 2-worker LocalCluster on loopback, this takes 0.4–0.6 s and finds
~10 ms latency, 2.2–3.6 ms per task in a burst and 100–290 MB/s (benchmarks/bench_dask.py).

A stored record is reused only for the same scheduler instance (its id, which a restarted scheduler at
the same address does not keep), so a new cluster is measured anew; workers, threads and memory are
always read live, as clusters scale.
"""

from __future__ import annotations

import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from amorsize.core.types import Machine, MachineCosts
from amorsize.errors import StoreError
from amorsize.measure.machine import stored_figures
from amorsize.store import Store, default_store

__all__ = [
    "CLUSTER_CALIBRATION_VERSION",
    "CLUSTER_NAMESPACE",
    "ClusterCosts",
    "ClusterShape",
    "calibrate_cluster",
    "cluster_machine",
    "cluster_shape",
    "probe_cluster",
]

#: Store namespace of the measured cluster costs; the key is the scheduler address.
CLUSTER_NAMESPACE = "cluster-calibration"

#: Bump when the way :func:`calibrate_cluster` measures changes, so old records are not reused.
CLUSTER_CALIBRATION_VERSION = 1

#: No-op tasks run one after another; their median round trip is the latency. 5 give a median robust
#: to one outlier (the dev VM's round trips spread 6–20 ms) in ~50 ms.
LATENCY_ROUNDS = 5

#: No-op tasks submitted at once; elapsed / count is the throughput cost per task (what the planner's
#: dispatch term needs). On the dev VM 50, 200 and 500 tasks gave the same 3.4–3.6 ms per task, so 50
#: suffice (~0.2 s there; a real scheduler takes well under a millisecond per task).
BURST_TASKS = 50

#: Bytes of the payload probe, echoed by a worker, and timed rounds (median) after one warm-up round.
#: 4 MiB is the local probe's size (measure/machine.py); on the dev VM the first rounds through a fresh
#: LocalCluster took 3–5× longer than the next ones (165–288 ms vs ~54 ms), hence the warm-up.
PAYLOAD_BYTES = 4 * 2**20
PAYLOAD_ROUNDS = 3

#: Seconds to wait for any probe task before giving up on measuring. A healthy cluster answers in
#: milliseconds; 30 s is Dask's own default connect timeout, and covers a cluster still starting workers.
PROBE_TIMEOUT = 30.0

#: Memory counted for a cluster whose workers have no memory limit (Dask's ``memory_limit=0``): no
#: bound from memory. LocalCluster and ``dask worker`` default to a limit ("auto": the host's memory
#: divided among the workers), so this is the rare, explicit choice of the cluster's owner.
UNLIMITED_MEMORY = sys.maxsize


@dataclass(frozen=True)
class ClusterShape:
    """What the scheduler reports about its workers right now.

    Attributes:
        address: the scheduler's address, e.g. ``"tcp://10.0.0.5:8786"``.
        scheduler_id: the scheduler instance's id (a restarted scheduler gets a new one).
        n_workers: worker processes.
        threads: worker threads across all workers (the chunks that can run at once).
        memory_limit: the workers' memory limits added up, bytes; None when a worker has none.
        memory_used: the workers' resident memory added up, bytes.
    """

    address: str
    scheduler_id: str
    n_workers: int
    threads: int
    memory_limit: int | None
    memory_used: int


@dataclass(frozen=True)
class ClusterCosts:
    """The measured costs of running tasks on one cluster.

    Attributes:
        task_latency: seconds of one no-op task's round trip (submit → result), alone.
        task_overhead: seconds per no-op task when many are submitted at once (throughput).
        bandwidth: bytes per second of a payload sent to a worker and back.
        source: ``"measured"`` (just now) or ``"stored"`` (read back from the store).
    """

    task_latency: float
    task_overhead: float
    bandwidth: float
    source: str = "measured"


def _noop() -> None:
    """The probe task that does nothing (run on the workers)."""


def _echo(payload: bytes) -> bytes:
    """The probe task that sends its payload back (run on the workers)."""
    return payload


def cluster_shape(client: Any) -> ClusterShape:
    """Read the cluster's workers, threads and memory from its scheduler.

    Args:
        client: a ``distributed.Client``.

    Returns:
        The shape (threads at least 1 so that the planner has a worker to plan for).
    """
    info = client.scheduler_info(n_workers=-1)
    workers = list(info.get("workers", {}).values())
    limits = [int(w.get("memory_limit") or 0) for w in workers]
    used = sum(int(w.get("metrics", {}).get("memory") or 0) for w in workers)
    return ClusterShape(
        address=str(info.get("address", "")),
        scheduler_id=str(info.get("id", "")),
        n_workers=len(workers),
        threads=max(1, sum(int(w.get("nthreads") or 0) for w in workers)),
        memory_limit=sum(limits) if workers and all(limit > 0 for limit in limits) else None,
        memory_used=used,
    )


def calibrate_cluster(client: Any, *, clock: Callable[[], float] = time.perf_counter) -> ClusterCosts:
    """Measure the per-task and transfer costs of the cluster behind ``client`` (see the module docstring).

    Args:
        client: a ``distributed.Client``.
        clock: returns seconds; the round trips are timed with it.

    Returns:
        The measured costs.

    Raises:
        TimeoutError: a probe task did not come back within :data:`PROBE_TIMEOUT` seconds.
    """
    n_threads = max(1, sum(client.nthreads().values()))
    client.gather([client.submit(_noop, pure=False) for _ in range(n_threads)])  # warm-up

    def timed(run: Callable[[], Any]) -> float:
        began = clock()
        run()
        return clock() - began

    latency = statistics.median(
        timed(lambda: client.submit(_noop, pure=False).result(timeout=PROBE_TIMEOUT))
        for _ in range(LATENCY_ROUNDS)
    )
    burst = timed(lambda: client.gather([client.submit(_noop, pure=False) for _ in range(BURST_TASKS)]))
    payload = bytes(PAYLOAD_BYTES)

    def echo() -> None:
        client.submit(_echo, payload, pure=False).result(timeout=PROBE_TIMEOUT)

    echo()  # warm-up
    round_trips = [timed(echo) for _ in range(PAYLOAD_ROUNDS)]
    moving = max(statistics.median(round_trips) - latency, 1e-6)
    return ClusterCosts(
        task_latency=latency,
        task_overhead=burst / BURST_TASKS,
        bandwidth=2 * PAYLOAD_BYTES / moving,
        source="measured",
    )


def cluster_machine(shape: ClusterShape, costs: ClusterCosts) -> Machine:
    """The cluster as the planner sees it: a machine whose cores are the workers' threads.

    Pure. Start-up is 0 (the workers already run); the per-task cost is the measured throughput cost
    (the model counts it once per chunk); the bandwidth is the measured one.

    Args:
        shape: the cluster's workers (:func:`cluster_shape`).
        costs: its measured costs (:func:`calibrate_cluster`).

    Returns:
        The machine; ``start_method`` is ``"dask"``.

    Example:
        >>> shape = ClusterShape("tcp://10.0.0.5:8786", "Scheduler-1", 4, 16, 64 * 2**30, 4 * 2**30)
        >>> machine = cluster_machine(shape, ClusterCosts(0.004, 0.001, 5e8))
        >>> machine.usable_cores, machine.available_memory // 2**30, machine.costs.process_startup
        (16, 60, 0.0)
    """
    available = (
        UNLIMITED_MEMORY if shape.memory_limit is None else max(0, shape.memory_limit - shape.memory_used)
    )
    return Machine(
        logical_cores=shape.threads,
        usable_cores=shape.threads,
        physical_cores=shape.threads,
        available_memory=available,
        memory_limit=shape.memory_limit,
        start_method="dask",
        free_threaded=False,
        costs=MachineCosts(
            process_startup=0.0,
            process_task_overhead=costs.task_overhead,
            pipe_bandwidth=costs.bandwidth,
            thread_startup=0.0,
            thread_task_overhead=costs.task_overhead,
            source=costs.source,
        ),
    )


def _from_record(value: Any, scheduler_id: str) -> ClusterCosts | None:
    """The costs in a stored record, or None when it is missing, malformed, old or for another scheduler."""
    if not isinstance(value, dict):
        return None
    if value.get("version") != CLUSTER_CALIBRATION_VERSION or value.get("scheduler_id") != scheduler_id:
        return None
    figures = stored_figures(value, ("task_latency", "task_overhead", "bandwidth"))
    return None if figures is None else ClusterCosts(**figures, source="stored")


def _store_or_warn(store: Store | None) -> Store | None:
    if store is not None:
        return store
    try:
        return default_store()
    except StoreError as exc:
        warnings.warn(
            f"Dask cluster calibration is not kept between runs: {exc}", RuntimeWarning, stacklevel=3
        )
        return None


def probe_cluster(
    client: Any,
    *,
    refresh: bool = False,
    store: Store | None = None,
    calibrate: Callable[[Any], ClusterCosts] = calibrate_cluster,
) -> Machine:
    """What the Dask cluster behind ``client`` offers a run, with costs measured against it.

    Workers, threads and memory are read from the scheduler on every call; the costs are measured
    once per scheduler (~0.5 s on a local cluster) and kept in the store under its address.

    Args:
        client: a ``distributed.Client``.
        refresh: measure the costs again even when the store has them.
        store: where the costs are kept; None: :func:`~amorsize.store.default_store` (when it is
            unusable the costs are measured but not kept, and a RuntimeWarning says so).
        calibrate: the measuring function (tests pass a fake).

    Returns:
        The cluster as a :class:`~amorsize.core.types.Machine` (see :func:`cluster_machine`).
    """
    shape = cluster_shape(client)
    store = _store_or_warn(store)
    costs: ClusterCosts | None = None
    if store is not None and not refresh:
        try:
            costs = _from_record(store.get(CLUSTER_NAMESPACE, shape.address), shape.scheduler_id)
        except StoreError as exc:
            warnings.warn(f"could not read the Dask cluster calibration: {exc}", RuntimeWarning, stacklevel=2)
    if costs is None:
        costs = calibrate(client)
        if store is not None:
            record = {
                **asdict(costs),
                "version": CLUSTER_CALIBRATION_VERSION,
                "scheduler_id": shape.scheduler_id,
                "n_workers": shape.n_workers,
                "threads": shape.threads,
                "measured_at": time.time(),
            }
            try:
                store.put(CLUSTER_NAMESPACE, shape.address, record)
            except StoreError as exc:
                warnings.warn(
                    f"could not save the Dask cluster calibration: {exc}", RuntimeWarning, stacklevel=2
                )
    return cluster_machine(shape, costs)
