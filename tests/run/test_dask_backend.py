"""Tests for the Dask backend beyond the shared contract suite: connecting, the worker-side chunk loop,
scattering, deduplication, aborting, losing workers for real, and the public API on a cluster.

One LocalCluster on 127.0.0.1 (2 worker processes × 1 thread) serves the module. It is started with
``distributed.scheduler.allowed-failures=1`` so that a chunk survives one worker death (Dask reruns
it) and Dask gives up on the second, which keeps the worker-killing tests short.

``distributed`` is imported by a fixture, never at collection: importing it changes how exceptions
pickle in the whole process (``tblib.pickling_support.install()``), and starting a LocalCluster sets
``OMP_NUM_THREADS=1`` and friends in this process's environment (its nannies' pre-spawn-environ);
the fixture undoes both when the module is done, so that other modules' tests see the defaults.
"""

from __future__ import annotations

import contextlib
import copyreg
import importlib.util
import logging
import os
import pickle
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import CancelledError
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from workfuncs import behave, square

import amorsize
from amorsize.errors import (
    ConfigurationError,
    ItemError,
    ItemTimeoutError,
    MissingExtraError,
    WorkerDiedError,
)
from amorsize.measure.cluster import CLUSTER_NAMESPACE
from amorsize.resilience.retry import RetryPolicy
from amorsize.run.backend import ChunkOutcome, ChunkTask, FunctionRef
from amorsize.run.backends import dask as dask_backend
from amorsize.run.backends.dask import DaskBackend, connect, run_chunk
from amorsize.run.runner import Runner
from amorsize.store import default_store

if importlib.util.find_spec("distributed") is None:
    pytest.skip("the dask extra (distributed) is not installed", allow_module_level=True)

N_WORKERS = 2


@contextlib.contextmanager
def process_state_restored() -> Iterator[None]:
    """Undo, when the block ends, what ``distributed`` changes in this process (module docstring).

    ``tblib.pickling_support.install()`` registers a reducer (copyreg) for every exception class then
    loaded, so that, e.g., an exception whose ``__init__`` does not match its ``args`` unpickles after
    all; a nanny's start leaves its ``pre-spawn-environ`` in ``os.environ``.
    """
    pickling, environ = dict(copyreg.dispatch_table), dict(os.environ)
    try:
        yield
    finally:
        copyreg.dispatch_table.clear()
        copyreg.dispatch_table.update(pickling)
        os.environ.clear()
        os.environ.update(environ)


@pytest.fixture(scope="module", autouse=True)
def dask_modules() -> Iterator[SimpleNamespace]:
    """``dask`` and ``distributed``, imported for this module only (see the module docstring)."""
    with process_state_restored():
        import dask
        import distributed

        yield SimpleNamespace(dask=dask, distributed=distributed)


@pytest.fixture(scope="module")
def cluster(dask_modules: SimpleNamespace) -> Iterator[Any]:
    """The module's LocalCluster (loopback only, logs silenced)."""
    dask, distributed = dask_modules.dask, dask_modules.distributed
    quiet = [logging.getLogger(name) for name in ("distributed", "tornado", "bokeh")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.CRITICAL)  # killed workers and cancelled tasks are logged as errors
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 1}),
        distributed.LocalCluster(
            n_workers=N_WORKERS,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",  # any free port: never clash with another cluster
            silence_logs=logging.CRITICAL,
        ) as made,
    ):
        yield made
    for logger, level in zip(quiet, levels, strict=True):
        logger.setLevel(level)


@pytest.fixture(scope="module")
def module_client(cluster: Any, dask_modules: SimpleNamespace) -> Iterator[Any]:
    with dask_modules.distributed.Client(cluster, set_as_default=False) as made:
        yield made


@pytest.fixture
def client(module_client: Any) -> Any:
    """The module's client, once every worker is up (a test before may have killed some)."""
    module_client.wait_for_workers(N_WORKERS, timeout=30)
    return module_client


@pytest.fixture
def backend(client: Any) -> Iterator[DaskBackend]:
    with DaskBackend(client) as made:
        yield made


def task(
    items: list[Any], func: Any = square, *, chunk_id: int = 0, start: int = 0, **kwargs: Any
) -> ChunkTask:
    return ChunkTask(chunk_id, start, items, FunctionRef.create(func), **kwargs)


def run_here(items: list[Any], func: Any = square, **kwargs: Any) -> ChunkOutcome:
    """Run the worker-side function in this process and decode its reply as the client does."""
    chunk = task(items, func, **kwargs)
    reply = run_chunk(
        chunk.func.payload,
        chunk.func.key,
        pickle.dumps(items),
        chunk.start,
        chunk.stop_on_error,
        chunk.item_timeout,
    )
    return dask_backend._decoded(chunk, reply)


def log_and_sleep(item: tuple[int, str]) -> int:
    """Append ``pid x`` to the log file, sleep 0.1 s, return x²."""
    x, log = item
    with open(log, "a") as out:
        out.write(f"{os.getpid()} {x}\n")
    time.sleep(0.1)
    return x * x


_SEEN: set[int] = set()


def fails_once(x: int) -> int:
    """Raise the first time a worker process sees ``x``, succeed after."""
    if x not in _SEEN:
        _SEEN.add(x)
        raise ConnectionError(f"first try of {x}")
    return x


class TestConnect:
    def test_missing_extra_names_it(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed now fails
        with pytest.raises(MissingExtraError, match=r"amorsize\[dask\]") as info:
            DaskBackend()
        assert (info.value.extra, info.value.module) == ("dask", "distributed")
        with pytest.raises(MissingExtraError):
            amorsize.execute(square, range(3), backend="dask")
        with pytest.raises(MissingExtraError):
            amorsize.optimize(square, range(3), backend="dask")

    def test_no_default_client(self, monkeypatch: pytest.MonkeyPatch, dask_modules: SimpleNamespace) -> None:
        def none() -> Any:
            raise ValueError("No clients found")

        monkeypatch.setattr(dask_modules.distributed, "default_client", none)
        with pytest.raises(ConfigurationError, match="found no Dask client"):
            connect(None)

    def test_wrong_type(self) -> None:
        with pytest.raises(ConfigurationError, match="got int"):
            connect(8786)  # type: ignore[arg-type]

    @pytest.mark.timeout(30)
    def test_unreachable_address(self, dask_modules: SimpleNamespace) -> None:
        with (
            dask_modules.dask.config.set({"distributed.comm.timeouts.connect": "0.5s"}),
            pytest.raises(ConfigurationError, match="could not connect to the Dask scheduler"),
        ):
            connect("tcp://127.0.0.1:9")

    @pytest.mark.timeout(30)
    def test_an_address_gets_its_own_client_closed_on_close(self, client: Any, cluster: Any) -> None:
        with DaskBackend(cluster.scheduler_address) as backend:
            assert backend.client is not client
            assert list(Runner(backend, square, range(10), chunksize=3)) == [i * i for i in range(10)]
        assert backend.client.status == "closed"
        assert client.status == "running"

    @pytest.mark.timeout(30)
    def test_a_given_client_is_left_open(self, client: Any) -> None:
        with DaskBackend(client) as backend:
            assert backend.n_workers == N_WORKERS  # threads across the workers
        backend.close()  # idempotent
        assert client.status == "running"
        assert backend.submit(task([1])).cancelled()


class TestRunChunk:
    """The worker-side loop, run in this process."""

    def test_results_and_timing(self) -> None:
        outcome = run_here([1, 2, 3], start=10)
        assert (outcome.results, outcome.n_done, outcome.failures) == ([1, 4, 9], 3, ())
        assert outcome.duration >= 0 and outcome.start == 10

    def test_failure_carries_the_remote_traceback_and_stops(self) -> None:
        outcome = run_here([1, ("unpicklable-error", 0), 3], behave, start=5)
        assert outcome.n_done == 2
        [failure] = outcome.failures
        assert failure.index == 6
        assert "behave" in failure.traceback
        assert "cannot travel" in str(failure.error)

    def test_collect_goes_on(self) -> None:
        outcome = run_here([("system-exit", 3), 2], behave, stop_on_error=False)
        assert outcome.n_done == 2 and outcome.results == [None, 2]
        assert isinstance(outcome.failures[0].error, SystemExit)

    def test_unpicklable_result_fails_only_its_item(self) -> None:
        outcome = run_here([1, ("lock", 0), 3], behave, stop_on_error=False)
        assert outcome.results == [1, None, 3]
        assert [f.index for f in outcome.failures] == [1]
        assert "cannot be pickled to send it back from the Dask worker" in str(outcome.failures[0].error)

    @pytest.mark.timeout(10)
    def test_timeout_abandons_the_item_and_keeps_the_results_before(self) -> None:
        started = time.monotonic()
        outcome = run_here([1, ("sleep", 3.0), 3], behave, item_timeout=0.2)
        assert time.monotonic() - started < 1.5
        assert (outcome.results, outcome.n_done) == ([1, None], 2)
        [failure] = outcome.failures
        assert isinstance(failure.error, ItemTimeoutError) and failure.index == 1

    def test_undecodable_chunk_fails_every_item(self) -> None:
        chunk = task([1, 2])
        reply = run_chunk(b"not a pickle", "key-of-nothing", pickle.dumps([1, 2]), 0, True, None)
        outcome = dask_backend._decoded(chunk, reply)
        assert outcome.n_done == 2 and len(outcome.failures) == 2


@pytest.mark.timeout(60)
class TestSubmit:
    def test_identical_chunks_both_run(self, backend: DaskBackend, tmp_path: Path) -> None:
        log = str(tmp_path / "log")
        same = [task([(1, log)], log_and_sleep), task([(1, log)], log_and_sleep)]
        outcomes = [f.result(timeout=20) for f in [backend.submit(t) for t in same]]
        assert [o.results for o in outcomes] == [[1], [1]]
        assert len(Path(log).read_text().splitlines()) == 2  # two tasks, not deduplicated

    def test_outcome_names_the_worker(self, backend: DaskBackend) -> None:
        outcome = backend.submit(task([2])).result(timeout=20)
        assert outcome.worker.startswith("dask:tcp://127.0.0.1:")

    def test_a_large_function_is_scattered_once(
        self, backend: DaskBackend, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        calls: list[int] = []
        scatter = backend.client.scatter

        def counted(data: Any, **kwargs: Any) -> Any:
            calls.append(len(data))
            return scatter(data, **kwargs)

        monkeypatch.setattr(backend.client, "scatter", counted)
        table = bytes(range(256)) * 1024  # 256 KiB in the closure

        def lookup(i: int) -> int:
            return table[i]

        results = list(Runner(backend, lookup, range(200), chunksize=10, adaptive=False))
        assert results == [table[i] for i in range(200)]
        assert len(calls) == 1 and calls[0] >= dask_backend.SCATTER_THRESHOLD
        list(Runner(backend, square, range(20), chunksize=5))
        assert len(calls) == 1  # a small function travels inside its tasks

    def test_unpicklable_items_fail_their_chunk_at_once(self, backend: DaskBackend) -> None:
        outcome = backend.submit(task([1, threading.Lock()])).result(timeout=5)
        assert outcome.n_done == 2
        assert all(isinstance(f.error, pickle.PicklingError) for f in outcome.failures)
        assert "cannot be sent to the Dask cluster" in str(outcome.failures[0].error)

    def test_abort_cancels_and_stays_usable(self, backend: DaskBackend) -> None:
        futures = [backend.submit(task([("sleep", 1.0)], behave, chunk_id=i)) for i in range(6)]
        time.sleep(0.2)
        backend.abort()
        for future in futures:
            with pytest.raises(CancelledError):
                future.result(timeout=5)
        assert list(Runner(backend, square, range(8), chunksize=2)) == [i * i for i in range(8)]

    def test_streaming_abandoned_early_aborts(self, backend: DaskBackend) -> None:
        runner = Runner(backend, behave, (("sleep", 0.05) for _ in range(10_000)), chunksize=2, ordered=False)
        stream = iter(runner)
        assert [next(stream) for _ in range(5)] == [0.05] * 5
        stream.close()  # type: ignore[attr-defined]
        assert runner.report.status == "cancelled"
        assert runner.report.n_items == 5


@pytest.mark.timeout(60)
class TestFaults:
    def test_losing_a_worker_mid_run_loses_and_duplicates_nothing(
        self, backend: DaskBackend, client: Any, tmp_path: Path
    ) -> None:
        log = tmp_path / "log"
        log.touch()
        victim = next(iter(client.run(os.getpid).values()))
        killed = threading.Event()

        def kill_once_busy() -> None:  # SIGKILL the victim while it runs an item
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if any(line.split()[0] == str(victim) for line in log.read_text().splitlines()[3:]):
                    os.kill(victim, signal.SIGKILL)
                    killed.set()
                    return
                time.sleep(0.01)

        killer = threading.Thread(target=kill_once_busy, daemon=True)
        killer.start()
        items = [(i, str(log)) for i in range(40)]
        runner = Runner(backend, log_and_sleep, items, chunksize=2, adaptive=False)
        results = list(runner)
        killer.join()
        assert killed.is_set()
        assert results == [i * i for i in range(40)]
        assert (runner.report.n_items, runner.report.n_failed) == (40, 0)
        assert sum(c.size for c in runner.report.chunks) == 40  # each chunk reported once
        runs = Counter(line.split()[1] for line in log.read_text().splitlines())
        assert set(runs) == {str(i) for i in range(40)}
        assert max(runs.values()) == 2  # the killed worker's chunk ran again elsewhere

    def test_an_item_that_kills_every_worker_fails_only_its_chunk(self, backend: DaskBackend) -> None:
        items: list[Any] = [0, 1, ("kill", 0), 3, 4]
        # one chunk in flight, so no innocent chunk shares a dying worker
        # (see "Running on a Dask cluster" in the README)
        runner = Runner(
            backend, behave, items, chunksize=1, adaptive=False, on_error="collect", max_in_flight=1
        )
        assert list(runner) == [0, 1, None, 3, 4]
        [failure] = runner.report.failures
        assert failure.index == 2 and isinstance(failure.error, WorkerDiedError)
        assert "2 Dask workers died while running items [2]" in str(failure.error)

    def test_under_raise_the_death_is_raised(self, backend: DaskBackend) -> None:
        with pytest.raises(WorkerDiedError) as info:
            list(Runner(backend, behave, [("kill", 0), 1], chunksize=2, adaptive=False, max_in_flight=1))
        assert info.value.indices == (0, 1)


@pytest.mark.timeout(60)
class TestPublicApi:
    def test_execute_forced_on_dask(self, client: Any) -> None:
        results, report = amorsize.execute(
            square, range(100), client=client, executor="dask", n_jobs=2, chunksize=10, return_report=True
        )
        assert results == [i * i for i in range(100)]
        assert report.executor == "dask" and report.n_workers == N_WORKERS

    def test_execute_plans_and_keeps_the_dry_runs_results(self, client: Any) -> None:
        items = [("sleep", 0.02)] * 150
        results, report = amorsize.execute(behave, items, client=client, return_report=True)
        assert results == [0.02] * 150
        assert report.executor == "dask"
        assert report.items_from_dry_run > 0
        assert report.items_from_dry_run + sum(c.size for c in report.chunks) == 150

    def test_optimize_plans_for_the_cluster_and_caches_its_costs(self, client: Any) -> None:
        result = amorsize.optimize(behave, [("sleep", 0.02)] * 400, client=client, profile=True)
        assert result.executor == "dask" and result.n_jobs == N_WORKERS
        assert result.profile is not None and result.profile.machine.start_method == "dask"
        assert result.profile.machine.costs.process_startup == 0.0
        address = client.scheduler.address
        assert default_store().get(CLUSTER_NAMESPACE, address) is not None
        assert "Dask cluster offers 2 worker threads" in result.reason

    def test_tiny_work_stays_serial(self, client: Any) -> None:
        assert amorsize.optimize(abs, range(100), backend="dask", client=client).executor == "serial"

    def test_an_address_is_connected_and_closed(self, client: Any, cluster: Any) -> None:
        def n_clients() -> int:
            return int(client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.clients)))

        before = n_clients()
        results = amorsize.execute(square, range(30), client=cluster.scheduler_address, executor="dask")
        assert results == [i * i for i in range(30)]
        deadline = time.monotonic() + 5
        while n_clients() != before:  # the scheduler hears of the closed client asynchronously
            assert time.monotonic() < deadline, "the client made for the address was left open"
            time.sleep(0.05)

    def test_imap_streams_unordered(self, client: Any) -> None:
        stream = amorsize.imap(
            square, iter(range(10**9)), client=client, executor="dask", n_jobs=2, chunksize=4, ordered=False
        )
        first = [next(stream) for _ in range(50)]
        stream.close()  # type: ignore[attr-defined]
        assert len(set(first)) == 50

    def test_retry_and_collect_apply_unchanged(self, client: Any) -> None:
        retry = amorsize.execute(
            fails_once,
            range(20),
            client=client,
            executor="dask",
            n_jobs=2,
            chunksize=5,
            retry=RetryPolicy(max_retries=2, initial_delay=0.0, jitter=False),
        )
        assert retry == list(range(20))
        results, report = amorsize.execute(
            behave,
            [1, ("unpicklable-error", 0), 3],
            client=client,
            executor="dask",
            on_error="collect",
            placeholder="x",
            return_report=True,
        )
        assert results == [1, "x", 3] and [f.index for f in report.failures] == [1]

    def test_raise_names_the_item(self, client: Any) -> None:
        with pytest.raises(ItemError) as info:
            amorsize.execute(
                behave, [1, ("unpicklable-error", 0)], client=client, executor="dask", n_jobs=2, chunksize=1
            )
        assert info.value.index == 1

    @pytest.mark.parametrize(
        ("options", "message"),
        [
            ({"backend": "dask", "executor": "threads"}, "cannot run on a Dask cluster"),
            ({"backend": "local", "executor": "dask"}, "pass backend='dask'"),
            ({"backend": "cluster"}, "backend must be"),
        ],
    )
    def test_bad_combinations(self, client: Any, options: dict[str, Any], message: str) -> None:
        if options["backend"] == "dask":
            options = {**options, "client": client}
        with pytest.raises(ConfigurationError, match=message):
            amorsize.execute(square, range(50), **options)
