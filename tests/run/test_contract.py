"""One contract suite, run through the runner against every backend (serial, threads, processes, Dask).

To add a backend, add one line to ``FACTORIES``; tests that only make sense for some backends say so
with ``only(...)``. Every test has a hard timeout so a deadlock fails instead of hanging.

Dask runs on a ``LocalCluster`` on loopback (2 worker processes × 1 thread), started once for this
module by the ``dask_client`` fixture; ``DaskBackend()`` finds it as the default client. Importing
``distributed`` changes how exceptions pickle in this process (``tblib.pickling_support.install()``)
and a LocalCluster leaves ``OMP_NUM_THREADS=1`` and friends in ``os.environ``; the fixture undoes
both when the module is done, so other modules see the defaults.
"""

from __future__ import annotations

import contextlib
import copyreg
import importlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import workfuncs
from workfuncs import ItemBoom, behave, fail_on_odd, square

from amorsize.errors import ItemError, ItemTimeoutError, WorkerDiedError
from amorsize.run.backend import Backend
from amorsize.run.runner import Runner

N_WORKERS = 2


def _backend(module: str, cls: str, *args: Any, **kwargs: Any) -> Callable[[], Backend]:
    """A factory that imports ``amorsize.run.backends.<module>`` only when a test needs it."""

    def factory() -> Backend:
        made: Backend = getattr(importlib.import_module(f"amorsize.run.backends.{module}"), cls)(
            *args, **kwargs
        )
        return made

    return factory


#: kind → a factory of a fresh backend. One line per backend.
FACTORIES: dict[str, Callable[[], Backend]] = {
    "serial": _backend("serial", "SerialBackend"),
    "threads": _backend("threads", "ThreadBackend", N_WORKERS),
    "processes": _backend("processes", "ProcessBackend", N_WORKERS),
    "processes-spawn": _backend("processes", "ProcessBackend", N_WORKERS, start_method="spawn"),
    "dask": _backend("dask", "DaskBackend"),  # the default client: see dask_client
}


@pytest.fixture(scope="module")
def dask_client() -> Iterator[Any]:
    """A 2-worker LocalCluster on 127.0.0.1 for this module, its Client the default; logs silenced."""
    pickling, environ = dict(copyreg.dispatch_table), dict(os.environ)  # restored: module docstring
    distributed = pytest.importorskip("distributed")
    quiet = [logging.getLogger(name) for name in ("distributed", "tornado", "bokeh")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.CRITICAL)  # worker kills and cancellations are logged as errors
    with contextlib.ExitStack() as stack:
        for table, saved in ((copyreg.dispatch_table, pickling), (os.environ, environ)):
            stack.callback(table.update, saved)  # callbacks run last-in first-out: clear, then update
            stack.callback(table.clear)
        cluster = stack.enter_context(
            distributed.LocalCluster(
                n_workers=N_WORKERS,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address="127.0.0.1:0",  # any free port: never clash with another cluster
                silence_logs=logging.CRITICAL,
            )
        )
        yield stack.enter_context(distributed.Client(cluster))
    for logger, level in zip(quiet, levels, strict=True):
        logger.setLevel(level)


@pytest.fixture(params=sorted(FACTORIES))
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """A fresh backend of each kind, closed after the test."""
    if request.param == "dask":
        request.getfixturevalue("dask_client")
    try:
        made = FACTORIES[request.param]()
    except ModuleNotFoundError as error:  # pragma: no cover - while a backend is being written
        pytest.skip(f"{request.param} backend not available yet: {error}")
    with made:
        yield made


def only(backend: Backend, *kinds: str) -> None:
    """Skip the test unless ``backend`` is one of ``kinds``."""
    if backend.kind not in kinds:
        pytest.skip(f"not applicable to the {backend.kind} backend")


def busy_children(window: float = 0.3) -> list[psutil.Process]:
    """Child processes of this process that used more than half a core during ``window`` seconds."""
    children = psutil.Process().children(recursive=True)
    before: dict[int, float] = {}
    for child in children:
        try:
            times = child.cpu_times()
            before[child.pid] = times.user + times.system
        except psutil.NoSuchProcess:
            pass
    time.sleep(window)
    busy = []
    for child in children:
        try:
            times = child.cpu_times()
            if child.pid in before and times.user + times.system - before[child.pid] > window / 2:
                busy.append(child)
        except psutil.NoSuchProcess:
            pass
    return busy


def assert_no_busy_children(deadline: float = 3.0) -> None:
    """Fail unless, within ``deadline`` seconds, no child process is busy."""
    give_up = time.monotonic() + deadline
    while busy := busy_children():
        assert time.monotonic() < give_up, f"child processes still busy: {busy}"


@pytest.mark.timeout(30)
class TestResults:
    def test_order_is_preserved(self, backend: Backend) -> None:
        assert list(Runner(backend, square, range(300), chunksize=7)) == [i * i for i in range(300)]

    def test_empty_input(self, backend: Backend) -> None:
        runner = Runner(backend, square, [], chunksize=3)
        assert list(runner) == []
        assert runner.report.status == "completed"

    def test_generator_input(self, backend: Backend) -> None:
        results = list(Runner(backend, square, (i for i in range(101)), chunksize=4))
        assert results == [i * i for i in range(101)]

    def test_unordered_is_complete(self, backend: Backend) -> None:
        results = list(Runner(backend, square, range(500), chunksize=3, ordered=False))
        assert sorted(results) == [i * i for i in range(500)]

    def test_precomputed_prefix(self, backend: Backend) -> None:
        runner = Runner(backend, square, range(50), chunksize=4, precomputed=["a", "b"])
        assert list(runner) == ["a", "b", *[i * i for i in range(2, 50)]]
        assert runner.report.items_from_dry_run == 2

    def test_report(self, backend: Backend) -> None:
        runner = Runner(backend, square, range(40), chunksize=5)
        list(runner)
        report = runner.report
        assert (report.executor, report.n_workers, report.n_items) == (backend.kind, backend.n_workers, 40)
        assert sum(c.size for c in report.chunks) == 40
        assert report.wall_seconds > 0
        assert report.utilisation >= 0


@pytest.mark.timeout(30)
class TestItemErrors:
    def test_exception_names_the_index_and_chains_the_original(self, backend: Backend) -> None:
        with pytest.raises(ItemError) as info:
            list(Runner(backend, fail_on_odd, [0, 2, 4, 7, 8, 10], chunksize=2))
        error = info.value
        assert error.index == 3
        assert "item 3 raised ItemBoom: odd item 7" in str(error)
        assert isinstance(error.__cause__, ItemBoom)
        if backend.kind in ("processes", "dask"):
            assert "fail_on_odd" in str(error.__cause__.__cause__)  # the worker's traceback

    def test_collect_goes_on(self, backend: Backend) -> None:
        runner = Runner(backend, fail_on_odd, range(20), chunksize=3, on_error="collect", placeholder=-1)
        assert list(runner) == [i if i % 2 == 0 else -1 for i in range(20)]
        assert sorted(f.index for f in runner.report.failures) == list(range(1, 20, 2))


@pytest.mark.timeout(30)
class TestTimeouts:
    def test_item_timeout(self, backend: Backend, tmp_path: Path) -> None:
        """Processes: the item is stopped. Threads, Dask: abandoned, reported at once. Serial: after the fact.

        On Dask the item runs on a helper thread of the task, which is abandoned in the worker.
        """
        if backend.kind == "serial":
            items: list[Any] = [("sleep", 0.0), ("sleep", 0.4), ("sleep", 0.0)]
            func: Callable[[Any], Any] = behave
        else:
            pid_file = tmp_path / "pid"

            def func(item: Any) -> Any:
                if item == "stuck":
                    pid_file.write_text(str(os.getpid()))
                    time.sleep(20)
                return item

            items = ["ok", "stuck", "ok"]
        started = time.monotonic()
        with pytest.raises(ItemTimeoutError) as info:
            list(Runner(backend, func, items, chunksize=1, item_timeout=0.2))
        assert info.value.index == 1
        assert time.monotonic() - started < 5
        if backend.kind == "processes":
            pid = int(pid_file.read_text())
            give_up = time.monotonic() + 3
            while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                assert time.monotonic() < give_up, f"worker {pid} still running the timed-out item"
                time.sleep(0.05)

    def test_collect_resumes_after_a_timeout(self, backend: Backend) -> None:
        only(backend, "threads", "processes", "dask")
        items: list[Any] = [1, ("sleep", 10), 3, 4, 5]
        runner = Runner(backend, behave, items, chunksize=5, item_timeout=0.3, on_error="collect")
        assert list(runner) == [1, None, 3, 4, 5]
        assert [type(f.error) for f in runner.report.failures] == [ItemTimeoutError]


@pytest.mark.timeout(30)
class TestWorkerDeath:
    def test_sigkill_names_the_signal_and_items(self, backend: Backend) -> None:
        only(backend, "processes")
        items: list[Any] = [("sleep", 0.0)] * 4 + [("kill", 0)] + [("sleep", 0.0)] * 4
        started = time.monotonic()
        with pytest.raises(WorkerDiedError) as info:
            list(Runner(backend, behave, items, chunksize=2))
        assert time.monotonic() - started < 10
        assert info.value.signal_name == "SIGKILL"
        assert 4 in info.value.indices
        assert "SIGKILL" in str(info.value)
        assert_no_busy_children()

    def test_sigkill_under_collect_the_rest_completes(self, backend: Backend) -> None:
        only(backend, "processes")
        items: list[Any] = [*range(6), ("kill", 0), *range(7, 12)]
        runner = Runner(backend, behave, items, chunksize=1, on_error="collect", adaptive=False)
        results = list(runner)
        assert results == [*range(6), None, *range(7, 12)]
        assert [f.index for f in runner.report.failures] == [6]
        assert isinstance(runner.report.failures[0].error, WorkerDiedError)
        assert list(Runner(backend, square, range(10), chunksize=2)) == [i * i for i in range(10)]  # usable


@pytest.fixture
def ctrl_c_raises() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt, also where the suite runs in the background (it is ignored there)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.timeout(30)
class TestCtrlC:
    @pytest.mark.usefixtures("ctrl_c_raises")
    def test_sigint_during_a_run_stops_it_promptly(self, backend: Backend) -> None:
        # Processes spin (busy CPU would show if they were left running); threads and serial sleep
        # (a thread cannot be stopped: a spinning one would hold the GIL for the rest of the suite).
        # Dask sleeps 2 s, not 20: a running Dask task cannot be stopped either and keeps its worker
        # thread until it returns, so the "still usable" run below waits for the two running items.
        def spin(seconds: float) -> float:  # nested: cloudpickle sends it by value, any start method
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                pass
            return seconds

        func: Callable[[Any], Any] = spin if backend.kind == "processes" else workfuncs.behave
        items: list[Any] = [20.0] * 8 if backend.kind == "processes" else [("sleep", 20.0)] * 8
        if backend.kind == "dask":
            items = [("sleep", 2.0)] * 8
        timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
        runner = Runner(backend, func, items, chunksize=1)
        started = time.monotonic()
        try:
            timer.start()
            with pytest.raises(KeyboardInterrupt):
                list(runner)
        finally:
            timer.cancel()
        assert time.monotonic() - started < 5
        assert runner.report.status == "interrupted"
        if backend.kind == "processes":
            assert_no_busy_children()
        if backend.kind == "threads":
            idle = getattr(backend, "idle_workers", backend.n_workers)
            assert idle == backend.n_workers  # busy threads were abandoned and replaced
        assert list(Runner(backend, square, range(5), chunksize=2)) == [0, 1, 4, 9, 16]  # still usable
