"""The Dask backend on a 2-worker LocalCluster (loopback) against local processes and serial.

Run by hand (not in the test suite)::

    python benchmarks/bench_dask.py            # 3 repeats, medians
    python benchmarks/bench_dask.py --quick    # 1 repeat, smaller inputs

Two questions:

1. **Per-task overhead.** What :func:`amorsize.measure.cluster.calibrate_cluster` measures (one
   no-op round trip; the throughput cost of a burst of no-op tasks; the bandwidth of a payload echo),
   and what a chunk costs end to end through the runner: many one-item chunks of a no-op, on the Dask
   backend and on the local process backend, wall time / chunks.
2. **Speedup** of ``execute(backend="dask")`` versus ``execute(executor="processes")`` and serial on
   a CPU-bound workload (a pure-Python spin of 10 ms per item). Both ``execute`` calls plan (dry run
   included); the process pool is warm (started once before timing), as the Dask workers are.

The cluster and the local pool share the machine's cores, so on a small machine this measures the
Dask path's overhead, not what a real cluster adds in cores.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import psutil

from amorsize import execute
from amorsize.measure.cluster import calibrate_cluster, probe_cluster
from amorsize.run.backend import ChunkTask, FunctionRef
from amorsize.run.backends.dask import DaskBackend
from amorsize.run.backends.processes import ProcessBackend
from amorsize.run.pools import shutdown_pools
from amorsize.run.runner import Runner
from amorsize.workloads import busy


def noop(x: Any) -> Any:
    return x


def time_it(run: Callable[[], Any]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def per_chunk(backend: Any, n_chunks: int) -> float:
    """Seconds per one-item chunk of a no-op through the runner (pipelined, the runner's window)."""
    list(Runner(backend, noop, range(50), chunksize=1, adaptive=False))  # warm-up
    wall = time_it(lambda: list(Runner(backend, noop, range(n_chunks), chunksize=1, adaptive=False)))
    return wall / n_chunks


def round_trip(backend: Any, rounds: int) -> float:
    """Median seconds of one chunk submitted alone and waited for (latency)."""
    ref = FunctionRef.create(noop)
    samples = [time_it(lambda i=i: backend.submit(ChunkTask(i, 0, [0], ref)).result()) for i in range(rounds)]
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat, smaller inputs")
    args = parser.parse_args()
    repeats = 1 if args.quick else 3
    n_chunks = 200 if args.quick else 1000
    n_items = 200 if args.quick else 600

    from distributed import Client, LocalCluster

    print(
        f"# bench_dask — {platform.python_implementation()} {platform.python_version()}, "
        f"{psutil.cpu_count()} logical cores, {platform.system()}"
    )
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        print("\n## Per-task overhead (2-worker LocalCluster, 1 thread each)\n")
        costs = [calibrate_cluster(client) for _ in range(repeats)]
        print(
            f"calibrate_cluster: latency {statistics.median(c.task_latency for c in costs) * 1e3:.2f} ms, "
            f"burst {statistics.median(c.task_overhead for c in costs) * 1e3:.2f} ms/task, "
            f"bandwidth {statistics.median(c.bandwidth for c in costs) / 1e6:.0f} MB/s"
        )
        with DaskBackend(client) as dask_backend, ProcessBackend(2) as local:
            local.wait_ready(30)
            rows = []
            for name, backend in (("dask", dask_backend), ("processes", local)):
                pipelined = statistics.median(per_chunk(backend, n_chunks) for _ in range(repeats))
                alone = round_trip(backend, 20)
                rows.append((name, pipelined, alone))
        print("\n| backend | per chunk, pipelined | one chunk alone (latency) |")
        print("|---|---|---|")
        for name, pipelined, alone in rows:
            print(f"| {name} | {pipelined * 1e3:.3f} ms | {alone * 1e3:.3f} ms |")

        print(f"\n## Speedup: {n_items} items × 10 ms of pure-Python CPU\n")
        items = [0.01] * n_items
        serial = statistics.median(time_it(lambda: [busy(x) for x in items]) for _ in range(repeats))
        execute(busy, items[:40], executor="processes", n_jobs=2, chunksize=5)  # warm the pool
        probing = time_it(lambda: probe_cluster(client, refresh=True))  # measured once, then stored
        print(f"probe_cluster (measuring, then kept in the store): {probing:.2f} s\n")
        processes = statistics.median(
            time_it(lambda: execute(busy, items, executor="processes")) for _ in range(repeats)
        )
        dask = statistics.median(
            time_it(lambda: execute(busy, items, backend="dask")) for _ in range(repeats)
        )
        _, report = execute(busy, items, backend="dask", return_report=True)
        print("| contender | wall | speedup vs serial |")
        print("|---|---|---|")
        for name, wall in (
            ("serial", serial),
            ("execute(executor='processes')", processes),
            ("execute(backend='dask')", dask),
        ):
            print(f"| {name} | {wall:.3f} s | {serial / wall:.2f}× |")
        print(
            f"\nDask plan: {report.executor} × {report.n_workers}, initial chunks of "
            f"{report.initial_chunksize}, {report.n_chunks} chunks, utilisation {report.utilisation:.0%}"
        )
    shutdown_pools()
    print(f"\n(pid {os.getpid()}; run with --quick for a fast check)")


if __name__ == "__main__":
    main()
