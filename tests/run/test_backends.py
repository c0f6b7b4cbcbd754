"""Backends against the contract of ``amorsize.run.backend``: real threads, real processes, real signals.

Every test has a hard time limit so that a deadlock fails instead of hanging. Assertions on elapsed
time are generous (a loaded CI machine is slow); the figures measured on a quiet machine are in the
backends' report.
"""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import types
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import CancelledError, Future
from pathlib import Path
from typing import Any

import psutil
import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # spawned workers import the test functions from here
    sys.path.insert(0, str(HERE))

import workfuncs  # noqa: E402

from amorsize import _native  # noqa: E402
from amorsize._native import only_caller_runs_user_code  # noqa: E402
from amorsize.errors import ItemTimeoutError, WorkerDiedError  # noqa: E402
from amorsize.run import pools  # noqa: E402
from amorsize.run.backend import Backend, ChunkOutcome, ChunkTask, FunctionRef  # noqa: E402
from amorsize.run.backends import processes as processes_module  # noqa: E402
from amorsize.run.backends.processes import ProcessBackend, RemoteError, RemoteTraceback  # noqa: E402
from amorsize.run.backends.serial import SerialBackend  # noqa: E402
from amorsize.run.backends.threads import ThreadBackend, _Job  # noqa: E402

KINDS = ("serial", "threads", "processes")


def make(kind: str, n_workers: int = 2, **kwargs: Any) -> Backend:
    """A fresh backend of ``kind`` (processes: fork unless a start method is given)."""
    if kind == "serial":
        return SerialBackend()
    if kind == "threads":
        return ThreadBackend(n_workers)
    kwargs.setdefault("start_method", "fork")
    return ProcessBackend(n_workers, **kwargs)


def run(
    backend: Backend,
    items: Sequence[Any],
    func: Callable[[Any], Any] | FunctionRef = workfuncs.behave,
    *,
    start: int = 0,
    timeout: float = 10.0,
    **kwargs: Any,
) -> ChunkOutcome:
    """Submit one chunk and wait for its outcome."""
    ref = func if isinstance(func, FunctionRef) else FunctionRef.create(func)
    return backend.submit(ChunkTask(0, start, list(items), ref, **kwargs)).result(timeout)


def alive(pid: int) -> bool:
    """True if ``pid`` is a live (not zombie) process."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def reaped(pid: int) -> bool:
    """True once ``pid`` (a child of this process) is gone for good: dead and waited for, no zombie."""
    return not psutil.pid_exists(pid)


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def running_pid(backend: ProcessBackend, timeout: float = 5.0) -> int:
    """The pid of the worker that has started an item (via the shared slot), for external kills."""
    found: list[int] = []

    def started() -> bool:
        with backend._pool.lock:
            for worker in backend._pool.workers:
                if worker.jobs and worker.where()[1] >= 0 and worker.where()[0] == worker.jobs[0].task_no:
                    found.append(worker.pid)
                    return True
        return False

    assert wait_until(started, timeout), "no worker started its item"
    return found[0]


def pidfd_works() -> bool:
    """True where ``os.pidfd_open`` exists and the kernel has it (Linux 5.3+)."""
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError):
        return False
    return True


def busy_pids(backend: ProcessBackend) -> set[int]:
    """Pids of the workers holding a chunk."""
    with backend._pool.lock:
        return {worker.pid for worker in backend._pool.workers if worker.jobs}


@pytest.fixture(params=KINDS)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """Each backend kind in turn, closed afterwards."""
    instance = make(request.param)
    try:
        yield instance
    finally:
        instance.close()


@pytest.fixture
def processes() -> Iterator[ProcessBackend]:
    """A two-worker fork process backend, ready."""
    instance = ProcessBackend(2, start_method="fork")
    assert instance.wait_ready(10)
    try:
        yield instance
    finally:
        instance.close()


class TestContract:
    """What every backend guarantees."""

    @pytest.mark.timeout(20)
    def test_results_in_order(self, backend: Backend) -> None:
        outcome = run(backend, range(50), workfuncs.square, start=100)
        assert outcome.results == [x * x for x in range(50)]
        assert (outcome.n_done, outcome.failures, outcome.start) == (50, (), 100)
        assert outcome.duration >= 0 and outcome.cpu_time >= 0 and outcome.worker

    @pytest.mark.timeout(20)
    def test_empty_chunk(self, backend: Backend) -> None:
        outcome = run(backend, [])
        assert (outcome.results, outcome.n_done, outcome.failures) == ([], 0, ())

    @pytest.mark.timeout(20)
    def test_many_chunks_in_flight(self, backend: Backend) -> None:
        ref = FunctionRef.create(workfuncs.square)
        futures = [backend.submit(ChunkTask(i, 10 * i, list(range(i, i + 10)), ref)) for i in range(40)]
        for i, future in enumerate(futures):
            outcome = future.result(10)
            assert (outcome.chunk_id, outcome.start) == (i, 10 * i)
            assert outcome.results == [x * x for x in range(i, i + 10)]

    @pytest.mark.timeout(20)
    def test_item_exceptions_keep_going(self, backend: Backend) -> None:
        outcome = run(backend, [2, 3, 4, 5], workfuncs.fail_on_odd, start=10, stop_on_error=False)
        assert outcome.n_done == 4
        assert outcome.results == [2, None, 4, None]
        assert [f.index for f in outcome.failures] == [11, 13]
        for failure in outcome.failures:
            assert isinstance(failure.error, workfuncs.ItemBoom)
            assert "ItemBoom" in failure.traceback and "fail_on_odd" in failure.traceback
        if backend.kind == "processes":
            cause = outcome.failures[0].error.__cause__
            assert isinstance(cause, RemoteTraceback)
            assert "fail_on_odd" in str(cause) and "odd item 3" in str(cause)

    @pytest.mark.timeout(20)
    def test_stop_on_error(self, backend: Backend) -> None:
        outcome = run(backend, [2, 3, 4, 5], workfuncs.fail_on_odd, start=10, stop_on_error=True)
        assert outcome.n_done == 2
        assert outcome.results == [2, None]
        assert [f.index for f in outcome.failures] == [11]

    @pytest.mark.timeout(20)
    def test_system_exit_in_item_is_a_failure(self, backend: Backend) -> None:
        if backend.kind == "serial":
            pytest.skip("serial lets SystemExit propagate: it is the program exiting")
        outcome = run(backend, [("system-exit", 4), 1], stop_on_error=False)
        assert outcome.results == [None, 1]
        assert isinstance(outcome.failures[0].error, SystemExit)

    @pytest.mark.timeout(20)
    def test_closures_and_lambdas(self, backend: Backend) -> None:
        offset = 7
        outcome = run(backend, [1, 2], lambda x: x + offset)
        assert outcome.results == [8, 9]

    @pytest.mark.timeout(20)
    def test_submit_after_close_is_cancelled(self, backend: Backend) -> None:
        backend.close()
        backend.close()  # idempotent
        future = backend.submit(ChunkTask(0, 0, [1], FunctionRef.create(workfuncs.square)))
        with pytest.raises(CancelledError):
            future.result(5)

    @pytest.mark.timeout(20)
    def test_n_workers(self, backend: Backend) -> None:
        assert backend.n_workers == (1 if backend.kind == "serial" else 2)


class TestProcessPickling:
    """What cannot travel between processes fails its item, not the worker."""

    @pytest.mark.timeout(20)
    def test_unpicklable_result(self, processes: ProcessBackend) -> None:
        pids = processes.worker_pids()
        outcome = run(processes, [1, ("lock", 0), ("lambda", 5), 4], start=20, stop_on_error=False)
        assert outcome.n_done == 4
        assert outcome.results[0] == 1 and outcome.results[3] == 4
        assert outcome.results[2]() == 5  # plain pickle fails on a lambda: cloudpickle carries it
        [failure] = outcome.failures
        assert failure.index == 21
        assert "_thread.lock" in str(failure.error) and "cannot be pickled" in str(failure.error)
        assert processes.worker_pids() == pids  # no worker died for it

    @pytest.mark.timeout(20)
    def test_unpicklable_result_streamed(self, processes: ProcessBackend) -> None:
        outcome = run(processes, [1, ("lock", 0), 3], stop_on_error=False, item_timeout=10)
        assert outcome.results == [1, None, 3]
        assert "_thread.lock" in str(outcome.failures[0].error)

    @pytest.mark.timeout(20)
    def test_exceptions_that_cannot_travel(self, processes: ProcessBackend) -> None:
        items = [("unpicklable-error", 0), ("two-args-error", 0)]
        outcome = run(processes, items, stop_on_error=False)
        first, second = (f.error for f in outcome.failures)
        assert isinstance(first, RemoteError) and type(first).__name__ == "Unpicklable"
        assert "cannot travel" in str(first)
        assert isinstance(second, RemoteError) and type(second).__name__ == "NeedsTwoArgs"
        assert isinstance(first.__cause__, RemoteTraceback) and "behave" in str(first.__cause__)

    @pytest.mark.timeout(20)
    def test_unpicklable_items_fail_the_chunk(self, processes: ProcessBackend) -> None:
        outcome = run(processes, [1, threading.Lock()], start=5)
        assert outcome.n_done == 2
        assert [f.index for f in outcome.failures] == [5, 6]
        assert "cannot be sent to a worker process" in str(outcome.failures[0].error)

    @pytest.mark.timeout(20)
    def test_function_cache_eviction(self, processes: ProcessBackend) -> None:
        refs = [FunctionRef.create(lambda x, k=k: x + k) for k in range(12)]  # > FUNCTION_CACHE_SIZE
        for _ in range(2):
            for k, ref in enumerate(refs):
                assert run(processes, [1], ref).results == [1 + k]

    @pytest.mark.timeout(20)
    def test_function_sent_once_per_worker(self, tmp_path: Path) -> None:
        record = tmp_path / "loads"
        ref = FunctionRef.create(workfuncs.CountedLoads(str(record)))
        with ProcessBackend(1, start_method="fork") as backend:
            for i in range(5):
                assert run(backend, [i], ref).results == [i * i]
        assert len(record.read_text().split()) == 1

    @pytest.mark.timeout(20)
    def test_large_chunks_and_results(self, processes: ProcessBackend) -> None:
        big = [bytes(200_000)] * 5  # 1 MB: written by the sender thread, not inline
        futures = [processes.submit(ChunkTask(i, 0, big, FunctionRef.create(len))) for i in range(6)]
        for future in futures:
            assert future.result(20).results == [200_000] * 5
        outcome = run(processes, [1_000_000], lambda n: bytes(n))
        assert len(outcome.results[0]) == 1_000_000

    @pytest.mark.timeout(20)
    def test_large_and_small_frames_keep_their_order(self) -> None:
        with ProcessBackend(1, start_method="fork") as backend:
            ref = FunctionRef.create(len)
            sizes = [300_000, 10, 200_000, 20, 30, 100_000, 40]
            futures = [backend.submit(ChunkTask(i, 0, [bytes(n)], ref)) for i, n in enumerate(sizes)]
            assert [f.result(20).results[0] for f in futures] == sizes


def _pipe_capacity(fd: int) -> int:
    import fcntl

    return int(fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ))


def _sender_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("amorsize-sender-")]


@pytest.mark.skipif(
    not hasattr(processes_module.fcntl, "F_SETPIPE_SZ"), reason="pipes are resized on Linux only"
)
class TestGrownPipes:
    """Worker pipes of ``PIPE_SIZE`` on Linux, within ``PIPE_BUDGET`` for the process."""

    @pytest.mark.timeout(20)
    def test_frames_below_a_quarter_of_the_pipe_need_no_sender_thread(self) -> None:
        with ProcessBackend(1, start_method="fork") as backend:
            worker = backend._pool.workers[0]
            assert _pipe_capacity(worker.tasks.fileno()) == processes_module.PIPE_SIZE
            assert _pipe_capacity(worker.results.fileno()) == processes_module.PIPE_SIZE
            ref = FunctionRef.create(lambda blob: blob[::-1])
            blob = bytes(range(256)) * 160  # 40 KB: beyond the default pipe's inline limit
            futures = [backend.submit(ChunkTask(i, 0, [blob], ref)) for i in range(4)]
            assert all(f.result(20).results == [blob[::-1]] for f in futures)
            assert worker.sender is None and not _sender_threads()
            big = bytes(processes_module.PIPE_SIZE)  # beyond a quarter: the sender thread writes it
            assert run(backend, [big], len).results == [len(big)]
            assert worker.sender is not None

    @pytest.mark.timeout(20)
    def test_the_budget_caps_what_the_process_adds(self, monkeypatch: pytest.MonkeyPatch) -> None:
        extra = processes_module.PIPE_SIZE - processes_module._DEFAULT_PIPE_SIZE
        before = processes_module._PIPES.used
        monkeypatch.setattr(processes_module, "PIPE_BUDGET", before + 3 * extra)  # 1½ workers' worth
        with ProcessBackend(2, start_method="fork") as backend:
            capacities = sorted(
                (_pipe_capacity(w.tasks.fileno()), _pipe_capacity(w.results.fileno()))
                for w in backend._pool.workers
            )
            assert processes_module._PIPES.used == before + 3 * extra
            assert run(backend, list(range(100)), workfuncs.square).results == [x * x for x in range(100)]
        grown, default = processes_module.PIPE_SIZE, processes_module._DEFAULT_PIPE_SIZE
        assert capacities == [(grown, default), (grown, grown)]
        assert processes_module._PIPES.used == before  # given back at close

    @pytest.mark.timeout(20)
    def test_a_refused_size_leaves_the_default(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import fcntl

        def refuse(fd: int, command: int, arg: int = 0) -> int:
            if command == fcntl.F_SETPIPE_SZ:  # as for a user whose pipe pages are spent
                raise PermissionError(1, "Operation not permitted")
            return int(fcntl.fcntl(fd, command, arg))

        fake = types.SimpleNamespace(F_SETPIPE_SZ=fcntl.F_SETPIPE_SZ, fcntl=refuse)
        monkeypatch.setattr(processes_module, "fcntl", fake)
        before = processes_module._PIPES.used
        with ProcessBackend(1, start_method="fork") as backend:
            worker = backend._pool.workers[0]
            assert _pipe_capacity(worker.tasks.fileno()) == processes_module._DEFAULT_PIPE_SIZE
            assert worker.inline_limit == processes_module.INLINE_SEND_LIMIT
            assert processes_module._PIPES.used == before
            assert run(backend, [3], workfuncs.square).results == [9]


class TestProcessDeath:
    """A worker that dies fails exactly the items it held; the backend replaces it."""

    @pytest.mark.timeout(30)
    def test_item_kills_its_worker(self, processes: ProcessBackend) -> None:
        started = time.monotonic()
        outcome = run(processes, [1, 2, ("kill", 0), 4], start=30)
        elapsed = time.monotonic() - started
        assert elapsed < 5
        assert outcome.n_done == 3  # item 33 was never started: the runner may resubmit it
        assert [f.index for f in outcome.failures] == [30, 31, 32]  # results of 30, 31 went with it
        error = outcome.failures[0].error
        assert isinstance(error, WorkerDiedError)
        assert error.signal_name == "SIGKILL" and error.indices == (30, 31, 32)
        assert "SIGKILL" in str(error) and "30, 31, 32" in str(error)
        assert all(f.error is error for f in outcome.failures)
        assert run(processes, [3], workfuncs.square).results == [9]  # still usable
        assert wait_until(lambda: len(processes.worker_pids()) == 2)

    @pytest.mark.timeout(30)
    def test_external_sigkill_detected_promptly(self) -> None:
        with ProcessBackend(1, start_method="fork") as backend:
            future = backend.submit(ChunkTask(0, 0, [("sleep", 30)], FunctionRef.create(workfuncs.behave)))
            pid = running_pid(backend)
            killed = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            outcome = future.result(10)
            latency = time.monotonic() - killed
            assert latency < 5, latency
            [failure] = outcome.failures
            assert isinstance(failure.error, WorkerDiedError)
            assert failure.error.pid == pid and failure.error.indices == (0,)
            assert wait_until(lambda: reaped(pid))
            assert backend.wait_ready(10)
            assert pid not in backend.worker_pids()

    @pytest.mark.timeout(30)
    def test_os_exit(self, processes: ProcessBackend) -> None:
        outcome = run(processes, [("exit", 3), 1], start=7)
        error = outcome.failures[0].error
        assert isinstance(error, WorkerDiedError)
        assert (error.exitcode, error.signal_name, error.indices) == (3, None, (7,))
        assert "exited with code 3" in str(error)
        assert outcome.n_done == 1

    @pytest.mark.timeout(30)
    def test_streamed_results_survive_a_death(self, processes: ProcessBackend) -> None:
        outcome = run(processes, [1, 2, ("kill", 0), 4], item_timeout=30)
        assert outcome.results == [1, 2, None]
        assert [f.index for f in outcome.failures] == [2]

    @pytest.mark.timeout(30)
    def test_chunk_queued_behind_a_death_runs_elsewhere(self) -> None:
        with ProcessBackend(1, start_method="fork") as backend:
            ref = FunctionRef.create(workfuncs.behave)
            doomed = backend.submit(ChunkTask(0, 0, [("kill", 0)], ref))
            queued = backend.submit(ChunkTask(1, 1, [1, 2], ref))  # waits in the same worker's pipe
            assert isinstance(doomed.result(10).failures[0].error, WorkerDiedError)
            outcome = queued.result(10)
            assert (outcome.results, outcome.failures) == ([1, 2], ())

    @pytest.mark.timeout(30)
    def test_many_deaths(self, processes: ProcessBackend) -> None:
        ref = FunctionRef.create(workfuncs.behave)
        futures = [processes.submit(ChunkTask(i, i, [("kill", 0) if i % 2 else i], ref)) for i in range(10)]
        for i, future in enumerate(futures):
            outcome = future.result(20)
            if i % 2:
                assert isinstance(outcome.failures[0].error, WorkerDiedError)
            else:
                assert outcome.results == [i]


class TestForkRaces:
    """Another fork while a worker starts (fork inherits every open descriptor) must not hide its death.

    Between creating a new worker's pipes and closing the worker's ends of them in the parent, a fork
    by another thread copies those ends, among them the write end of the worker's process sentinel,
    into its child: the sentinel then stays silent after the worker's death for as long as that child
    lives. The tests force that interleaving by holding the starting thread inside ``os.fork`` while
    the other fork happens. Before the fix the second death below was never noticed and its future
    never resolved (a ``TimeoutError`` after 15 s here; an endless hang in ``execute()``).
    """

    @pytest.mark.timeout(60)
    def test_respawn_racing_another_pools_respawn(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # The sequence of the hang seen in execute(): a run aborts on one pool, whose manager starts
        # replacements, while on another pool a worker dies and its manager starts a replacement too.
        # The worker started second dies later; the one started first (the other pool's) lives on.
        real_fork = os.fork
        armed, b_forked = threading.Event(), threading.Event()
        with ProcessBackend(1, start_method="fork") as a, ProcessBackend(1, start_method="fork") as b:

            def fork() -> int:
                me = threading.current_thread()
                if me is a._pool.manager and armed.is_set():  # a's new worker's pipes are open now
                    armed.clear()
                    b.abort()  # b's manager starts a replacement: it forks inside a's window
                    b_forked.wait(2.0)  # bounded: b may have to wait until a's start is done
                pid = real_fork()
                if pid and me is b._pool.manager:
                    b_forked.set()
                return pid

            assert a.wait_ready(10) and b.wait_ready(10)
            ref = FunctionRef.create(workfuncs.behave)
            for round_no in range(2):
                sleeping = b.submit(ChunkTask(0, 0, [("sleep", 30)], ref))
                running_pid(b)
                armed.set()
                b_forked.clear()
                monkeypatch.setattr(os, "fork", fork)
                doomed = run(a, [("kill", 0)], start=round_no)  # a's worker dies: a starts another
                assert isinstance(doomed.failures[0].error, WorkerDiedError)
                with pytest.raises(CancelledError):
                    sleeping.result(10)
                assert a.wait_ready(10) and b.wait_ready(10)
                assert not armed.is_set() and b_forked.is_set()
                monkeypatch.setattr(os, "fork", real_fork)
                started = time.monotonic()
                outcome = run(a, [1, ("kill", 0)], start=10, timeout=15)  # a's new worker dies
                assert time.monotonic() - started < 5
                assert [f.index for f in outcome.failures] == [10, 11]
                assert isinstance(outcome.failures[0].error, WorkerDiedError)
                assert a.wait_ready(10)
                assert run(a, [3], workfuncs.square).results == [9]
                assert run(b, [4], workfuncs.square).results == [16]

    @pytest.mark.skipif(not pidfd_works(), reason="no pidfd: only the process sentinel tells a death")
    @pytest.mark.timeout(60)
    def test_respawn_racing_a_foreign_fork(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # A fork by code that is not ours (no lock of ours can order it): the child lives on holding
        # copies of the new worker's pipe ends, including the write end of its sentinel.
        real_fork = os.fork
        release_r, release_w = os.pipe()
        children: list[int] = []

        def fork() -> int:
            if threading.current_thread() is backend._pool.manager and not children:
                child = real_fork()
                if child == 0:  # pragma: no cover - the foreign child: wait, then leave at once
                    try:
                        os.close(release_w)
                        os.read(release_r, 1)
                    finally:
                        os._exit(0)
                children.append(child)
            return real_fork()

        try:
            with ProcessBackend(1, start_method="fork") as backend:
                assert backend.wait_ready(10)
                monkeypatch.setattr(os, "fork", fork)
                doomed = run(backend, [("kill", 0)])  # the manager respawns: the foreign fork happens
                assert isinstance(doomed.failures[0].error, WorkerDiedError)
                assert backend.wait_ready(10) and len(children) == 1
                monkeypatch.setattr(os, "fork", real_fork)
                started = time.monotonic()
                outcome = run(backend, [("kill", 0)], start=5, timeout=15)
                assert time.monotonic() - started < 5
                [failure] = outcome.failures
                assert isinstance(failure.error, WorkerDiedError) and failure.error.indices == (5,)
                assert backend.wait_ready(10)
                assert run(backend, [3], workfuncs.square).results == [9]
        finally:
            os.close(release_w)  # the foreign child reads EOF and exits
            os.close(release_r)
            for child in children:
                os.waitpid(child, 0)


class TestTimeouts:
    """``item_timeout``: processes kill the worker, threads abandon the thread, serial reports late."""

    @pytest.mark.timeout(30)
    def test_process_timeout_kills_the_worker(self, processes: ProcessBackend) -> None:
        started = time.monotonic()
        outcome = run(processes, [1, 2, ("sleep", 30), 4], start=40, item_timeout=0.5)
        assert time.monotonic() - started < 5
        assert outcome.n_done == 3 and outcome.results == [1, 2, None]  # results before it are kept
        [failure] = outcome.failures
        assert isinstance(failure.error, ItemTimeoutError)
        assert (failure.error.index, failure.error.timeout) == (42, 0.5)
        worker_pid = int(outcome.worker.removeprefix("pid:"))
        assert wait_until(lambda: reaped(worker_pid))  # the sleeping item was stopped for real
        assert run(processes, [5], item_timeout=5).results == [5]

    @pytest.mark.timeout(30)
    def test_process_items_within_the_limit(self, processes: ProcessBackend) -> None:
        outcome = run(processes, [("sleep", 0.05)] * 4, item_timeout=1.0)
        assert outcome.results == [0.05] * 4 and outcome.failures == ()

    @pytest.mark.timeout(30)
    def test_thread_timeout_abandons_the_thread(self) -> None:
        with ThreadBackend(1) as backend:
            started = time.monotonic()
            outcome = run(backend, [1, ("sleep", 3), 3], start=50, item_timeout=0.3)
            assert time.monotonic() - started < 2.5
            assert outcome.n_done == 2 and outcome.results == [1, None]
            assert isinstance(outcome.failures[0].error, ItemTimeoutError)
            # A replacement thread serves the next chunk while the stuck one still sleeps.
            assert run(backend, [7], timeout=2).results == [7]

    @pytest.mark.timeout(30)
    def test_serial_timeout_after_the_fact(self) -> None:
        with SerialBackend() as backend:
            outcome = run(backend, [1, ("sleep", 0.2), 3], start=60, item_timeout=0.05)
            assert outcome.n_done == 2 and outcome.results == [1, None]
            assert isinstance(outcome.failures[0].error, ItemTimeoutError)
            assert outcome.failures[0].index == 61


class TestRunningUserCode:
    """A thread backend counts the chunks it runs for ``amorsize._native.only_caller_runs_user_code``."""

    @pytest.mark.timeout(30)
    def test_running_and_abandoned_thread_chunks_count(self) -> None:
        before = _native.RUNNING_USER_CODE.count  # items abandoned by earlier tests may still be running
        release = threading.Event()
        seen: list[bool] = []

        def hold(x: int) -> int:
            seen.append(only_caller_runs_user_code())  # asked from an Amorsize worker thread
            release.wait(10)
            return x

        with ThreadBackend(1) as backend:
            future = backend.submit(ChunkTask(0, 0, [1], FunctionRef.local(hold)))
            assert wait_until(lambda: bool(seen))
            assert seen == [False]
            assert _native.RUNNING_USER_CODE.count == before + 1 and not only_caller_runs_user_code()
            backend.abort()  # the thread is abandoned: its item runs on
            with pytest.raises(CancelledError):
                future.result(5)
            assert _native.RUNNING_USER_CODE.count == before + 1 and not only_caller_runs_user_code()
            release.set()
            assert wait_until(lambda: _native.RUNNING_USER_CODE.count <= before)  # the item returned
        main = threading.main_thread()
        if before == 0 and all(t is main or t.name.startswith("amorsize-") for t in threading.enumerate()):
            assert only_caller_runs_user_code()


class TestAbort:
    """``abort()`` stops work now and leaves the backend usable."""

    @pytest.mark.timeout(30)
    def test_process_abort_kills_busy_workers_only(self) -> None:
        with ProcessBackend(3, start_method="fork") as backend:
            assert backend.wait_ready(10)
            ref = FunctionRef.create(workfuncs.behave)
            busy = [backend.submit(ChunkTask(i, i, [("sleep", 30)], ref)) for i in range(2)]
            assert wait_until(lambda: len(busy_pids(backend)) == 2)
            killed = busy_pids(backend)
            [idle] = set(backend.worker_pids()) - killed
            started = time.monotonic()
            backend.abort()
            for future in busy:
                with pytest.raises(CancelledError):
                    future.result(5)
            assert time.monotonic() - started < 3
            assert wait_until(lambda: all(reaped(pid) for pid in killed))
            assert idle in backend.worker_pids() and alive(idle)
            assert backend.wait_ready(10) and len(backend.worker_pids()) == 3
            assert run(backend, [1, 2], workfuncs.square).results == [1, 4]

    @pytest.mark.timeout(30)
    def test_process_abort_cancels_queued_chunks(self) -> None:
        with ProcessBackend(1, start_method="fork") as backend:
            ref = FunctionRef.create(workfuncs.behave)
            futures = [backend.submit(ChunkTask(i, i, [("sleep", 30)], ref)) for i in range(5)]
            running_pid(backend)
            backend.abort()
            for future in futures:
                with pytest.raises(CancelledError):
                    future.result(5)
            assert sum(f.cancelled() for f in futures) == 3  # never sent; the other two were in the worker
            assert run(backend, [4], workfuncs.square).results == [16]

    @pytest.mark.timeout(30)
    def test_thread_abort(self) -> None:
        with ThreadBackend(2) as backend:
            ref = FunctionRef.create(workfuncs.behave)
            futures = [backend.submit(ChunkTask(i, i, [("sleep", 0.5)] * 4, ref)) for i in range(4)]
            time.sleep(0.1)
            backend.abort()
            for future in futures:
                with pytest.raises(CancelledError):
                    future.result(2)
            assert run(backend, [3], timeout=2).results == [3]

    @pytest.mark.timeout(30)
    def test_thread_abort_drops_a_chunk_a_thread_took_but_had_not_started(self) -> None:
        # The race abort() must win: an idle thread has taken a chunk off the queue and waits for
        # the backend's lock to start it. Held here, the lock lets the abort run in between.
        calls: list[int] = []

        def record(x: int) -> int:
            calls.append(x)
            return x

        with ThreadBackend(1) as backend:
            assert run(backend, [1], record).results == [1]  # the thread exists and is idle
            assert wait_until(lambda: backend.idle_workers == 1, 5)
            future: Future[ChunkOutcome] = Future()
            task = ChunkTask(1, 1, [2], FunctionRef.local(record))
            with backend._lock:
                backend._queue.put(_Job(task, future, backend._epoch))
                assert wait_until(lambda: backend._queue.empty(), 5)  # taken by the thread
                time.sleep(0.05)  # the thread now waits for the lock
                assert backend._abort_locked() == []  # nothing queued, nothing running
            with pytest.raises(CancelledError):
                future.result(5)
            assert calls == [1]  # the chunk never ran
            assert run(backend, [3], record).results == [3]  # and the thread still serves

    @pytest.mark.timeout(30)
    def test_threads_the_system_refuses_leave_the_others_working(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        real_start = threading.Thread.start
        started: list[str] = []

        def start(thread: threading.Thread) -> None:
            if thread.name.startswith("amorsize-thread:") and len(started) >= 3:
                raise RuntimeError("can't start new thread")
            started.append(thread.name)
            real_start(thread)

        monkeypatch.setattr(threading.Thread, "start", start)
        with ThreadBackend(8) as backend:
            ref = FunctionRef.create(workfuncs.square)
            with pytest.warns(RuntimeWarning, match="runs on 3 threads, not 8"):
                futures = [backend.submit(ChunkTask(i, i, [i], ref)) for i in range(10)]
            assert [f.result(5).results for f in futures] == [[i * i] for i in range(10)]
            assert backend.n_workers == 3
        with ThreadBackend(2) as alone:
            started.extend(["taken"] * 3)  # no thread may start now
            with pytest.raises(RuntimeError, match="can't start new thread"):
                alone.submit(ChunkTask(0, 0, [1], FunctionRef.create(workfuncs.square)))

    @pytest.mark.timeout(30)
    def test_threads_start_with_the_first_chunk(self) -> None:
        before = threading.active_count()
        with ThreadBackend(4) as backend:
            assert threading.active_count() == before  # nothing started yet
            assert run(backend, [3], workfuncs.square).results == [9]
            assert wait_until(lambda: backend.idle_workers == 4, 5)  # all of them, at once
            ref = FunctionRef.create(workfuncs.square)
            futures = [backend.submit(ChunkTask(i, i, [i], ref)) for i in range(10)]
            assert [f.result(5).results for f in futures] == [[i * i] for i in range(10)]
            assert wait_until(lambda: backend.idle_workers == 4, 5)  # never more than n_workers
            assert threading.active_count() == before + 4

    @pytest.mark.timeout(30)
    def test_serial_abort_is_harmless(self) -> None:
        with SerialBackend() as backend:
            backend.abort()
            assert run(backend, [1]).results == [1]


class TestClose:
    """``close()`` leaves nothing behind."""

    @pytest.mark.timeout(30)
    @pytest.mark.parametrize("start_method", ["fork", "spawn"])
    def test_close_reaps_all_workers(self, start_method: str) -> None:
        backend = ProcessBackend(2, start_method=start_method)
        assert backend.wait_ready(20)
        pids = backend.worker_pids()
        busy = backend.submit(ChunkTask(0, 0, [("sleep", 30)], FunctionRef.create(workfuncs.behave)))
        run(backend, [1], workfuncs.square)
        backend.close()
        backend.close()
        with pytest.raises(CancelledError):
            busy.result(1)
        children = {p.pid for p in psutil.Process().children(recursive=True)}
        assert not children & set(pids)
        assert all(reaped(pid) for pid in pids)  # no zombie either

    @pytest.mark.timeout(30)
    def test_a_failed_start_leaves_no_worker_and_no_thread(
        self, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        # the second fork fails as fork does when the system is out of processes (EAGAIN)
        import multiprocessing.process

        real_start = multiprocessing.process.BaseProcess.start
        started: list[int] = []

        def start(process: multiprocessing.process.BaseProcess) -> None:
            if started:
                raise BlockingIOError(11, "Resource temporarily unavailable")
            real_start(process)
            assert process.pid is not None
            started.append(process.pid)

        monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", start)
        before = set(threading.enumerate())
        with pytest.raises(BlockingIOError):
            ProcessBackend(2, start_method="fork")
        assert started and reaped(started[0])
        assert wait_until(lambda: set(threading.enumerate()) <= before, 5)  # the manager ended…
        assert not caplog.records  # … told to, not by its pipe closed under it

    @pytest.mark.timeout(30)
    def test_exit_without_close_leaves_no_workers(self, tmp_path: Path) -> None:
        script = tmp_path / "leaky.py"
        script.write_text(
            textwrap.dedent(
                f"""
                import sys
                sys.path.insert(0, {str(HERE)!r})
                import workfuncs
                from amorsize.run.backend import ChunkTask, FunctionRef
                from amorsize.run.backends.processes import ProcessBackend

                backend = ProcessBackend(2, start_method="fork")
                ref = FunctionRef.create(workfuncs.behave)
                print(backend.submit(ChunkTask(0, 0, [1], ref)).result(10).results)
                print(*backend.worker_pids(), flush=True)
                backend.submit(ChunkTask(1, 0, [("sleep", 30)], ref))  # busy at exit
                """
            )
        )
        result = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, timeout=20, check=False
        )
        assert result.returncode == 0, result.stderr
        lines = result.stdout.split("\n")
        assert lines[0] == "[1]"
        pids = [int(pid) for pid in lines[1].split()]
        assert wait_until(lambda: not any(alive(pid) for pid in pids), 5)

    @pytest.mark.timeout(30)
    def test_garbage_collected_backend_stops_its_workers(self) -> None:
        backend = ProcessBackend(2, start_method="fork")
        assert backend.wait_ready(10)
        pids = backend.worker_pids()
        del backend
        gc.collect()
        assert wait_until(lambda: all(reaped(pid) for pid in pids), 5)

    @pytest.mark.timeout(30)
    def test_orphaned_workers_exit(self, tmp_path: Path) -> None:
        script = tmp_path / "doomed.py"
        script.write_text(
            textwrap.dedent(
                f"""
                import os, signal, sys
                sys.path.insert(0, {str(HERE)!r})
                import workfuncs
                from amorsize.run.backend import ChunkTask, FunctionRef
                from amorsize.run.backends.processes import ProcessBackend

                backend = ProcessBackend(2, start_method="fork")
                backend.submit(ChunkTask(0, 0, [("sleep", 30)], FunctionRef.create(workfuncs.behave)))
                assert backend.wait_ready(10)
                print(*backend.worker_pids(), flush=True)
                os.kill(os.getpid(), signal.SIGKILL)  # no finalizer, no atexit: workers are orphaned
                """
            )
        )
        result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=20)
        assert result.returncode == -signal.SIGKILL, result.stderr
        pids = [int(pid) for pid in result.stdout.split()]
        assert len(pids) == 2
        assert wait_until(lambda: not any(alive(pid) for pid in pids), 5)  # one busy, one idle


class TestSignals:
    """Workers leave Ctrl-C to the parent."""

    @pytest.mark.timeout(30)
    def test_workers_ignore_sigint(self) -> None:
        with ProcessBackend(1, start_method="fork") as backend:
            future = backend.submit(
                ChunkTask(0, 0, [("sleep", 0.5), 2], FunctionRef.create(workfuncs.behave))
            )
            pid = running_pid(backend)
            os.kill(pid, signal.SIGINT)
            outcome = future.result(10)
            assert (outcome.results, outcome.failures) == ([0.5, 2], ())
            assert backend.worker_pids() == [pid]


class TestStartMethods:
    """Correct under fork, forkserver and spawn (fewer tests for the slow ones)."""

    @pytest.mark.timeout(40)
    @pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
    def test_closures_errors_and_death(self, start_method: str) -> None:
        with ProcessBackend(1, start_method=start_method) as backend:
            assert backend.start_method == start_method
            offset = 3
            assert run(backend, [1, 2], lambda x: x + offset, timeout=30).results == [4, 5]
            outcome = run(backend, [2, 3], workfuncs.fail_on_odd, stop_on_error=False)
            assert isinstance(outcome.failures[0].error, workfuncs.ItemBoom)
            outcome = run(backend, [("kill", 0)], timeout=30)
            assert outcome.failures[0].error.signal_name == "SIGKILL"  # type: ignore[attr-defined]
            assert run(backend, [5], workfuncs.square, timeout=30).results == [25]

    @pytest.mark.timeout(20)
    def test_bad_arguments(self) -> None:
        from amorsize.errors import ConfigurationError

        with pytest.raises(ConfigurationError, match="start_method"):
            ProcessBackend(1, start_method="telepathy")
        with pytest.raises(ConfigurationError, match="n_workers must be >= 1"):
            ProcessBackend(0)
        with pytest.raises(ConfigurationError, match="blas_threads"):
            ProcessBackend(1, blas_threads=0)
        with pytest.raises(ConfigurationError, match="n_workers must be >= 1"):
            ThreadBackend(0)


class TestBlasLimit:
    """``blas_threads`` caps BLAS threads inside the workers (numpy + threadpoolctl)."""

    @pytest.mark.timeout(40)
    @pytest.mark.parametrize("start_method", ["fork", "spawn"])
    def test_limit_applied_in_workers(self, start_method: str) -> None:
        pytest.importorskip("numpy")
        with ProcessBackend(1, start_method=start_method, blas_threads=1) as backend:
            outcome = run(backend, [0], workfuncs.blas_threads, timeout=30)
            assert outcome.failures == ()
            assert outcome.results == [1]

    @pytest.mark.timeout(40)
    @pytest.mark.skipif(sys.platform != "linux", reason="fork")
    def test_forked_workers_capped_without_spinning_threads_anywhere(self) -> None:
        numpy = pytest.importorskip("numpy")
        from threadpoolctl import threadpool_info

        if max((i["num_threads"] for i in threadpool_info() if i.get("user_api") == "blas"), default=1) < 2:
            pytest.skip("BLAS runs one thread here already")
        numpy.ones((64, 64)) @ numpy.ones((64, 64))  # the parent's BLAS threads exist
        time.sleep(0.2)  # and sleep again after the product
        before = [(i["filepath"], i["num_threads"]) for i in threadpool_info()]
        parent_cpu = time.process_time()
        with ProcessBackend(1, start_method="fork", blas_threads=1) as backend:
            # OpenBLAS restarts its threads (shut down by the fork) when its thread count is set,
            # and a restarted helper spins ~100 ms: ~0.1 s of CPU while the worker sleeps
            assert run(backend, [0.15], workfuncs.cpu_while_sleeping, timeout=30).results[0] < 0.05
            # the parent set nothing, so it restarted nothing (it spun ~0.1 s when it capped itself
            # around the fork and restored its limit after)
            assert time.process_time() - parent_cpu < 0.05
            assert run(backend, [0], workfuncs.blas_threads, timeout=30).results == [1]
            assert run(backend, [0], workfuncs.blas_product, timeout=30).results == [64.0]
        assert [(i["filepath"], i["num_threads"]) for i in threadpool_info()] == before  # parent as it was

    @pytest.mark.timeout(40)
    def test_no_limit_by_default(self) -> None:
        pytest.importorskip("numpy")
        if (os.cpu_count() or 1) < 2:
            pytest.skip("one core: the default is already 1 thread")
        with ProcessBackend(1, start_method="spawn") as backend:
            assert run(backend, [0], workfuncs.blas_threads, timeout=30).results[0] > 1


class TestPools:
    """``pools``: warm backends reused across runs, never shared by two runs at once."""

    @pytest.mark.timeout(30)
    def test_reuse_keeps_the_same_workers(self) -> None:
        cache = pools.PoolCache()
        try:
            with cache.get("processes", 2, start_method="fork") as first:
                pids = {run(first, [i], workfuncs.pid_of).results[0] for i in range(6)}
                backend = first.backend
            assert isinstance(backend, ProcessBackend) and backend.wait_ready(10)
            workers = sorted(backend.worker_pids())
            assert pids <= set(workers)
            assert cache.warm_workers() == {"threads": 0, "processes": 2}
            with cache.get("processes", 2, start_method="fork") as second:
                assert second.backend is backend
                assert cache.warm_workers()["processes"] == 0  # leased: not warm for someone else
                again = {run(second, [i], workfuncs.pid_of).results[0] for i in range(6)}
            assert again <= set(workers)
            assert sorted(backend.worker_pids()) == workers  # no start-up paid the second time
        finally:
            cache.shutdown()
        assert backend.closed

    @pytest.mark.timeout(30)
    def test_concurrent_leases_get_different_backends(self) -> None:
        cache = pools.PoolCache()
        try:
            first = cache.get("threads", 2)
            second = cache.get("threads", 2)
            assert first.backend is not second.backend
            first.close()
            second.close()  # a surplus: closed, the first stays warm
            assert second.backend.closed  # type: ignore[attr-defined]
            assert cache.get("threads", 2).backend is first.backend
        finally:
            cache.shutdown()

    @pytest.mark.timeout(30)
    def test_default_cache(self) -> None:
        pools.shutdown_pools()  # no pool left over from another test
        with pools.get_pool("threads", 3) as leased:
            backend = leased.backend
            assert run(leased, [2], workfuncs.square).results == [4]
        # the threads start with the first chunk, all three
        assert wait_until(lambda: pools.warm_workers()["threads"] == 3, 5)
        with pools.lease("threads", 3) as again:
            assert again.backend is backend
        pools.shutdown_pools()
        assert backend.closed  # type: ignore[attr-defined]

    @pytest.mark.timeout(30)
    def test_bad_kind(self) -> None:
        from amorsize.errors import ConfigurationError

        with pytest.raises(ConfigurationError, match="kind must be one of"):
            pools.get_pool("quantum", 2)
