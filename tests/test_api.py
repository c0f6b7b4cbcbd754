"""The public functions, end to end: real dry runs, real planner, real pools."""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import amorsize.api
from amorsize import (
    ConfigurationError,
    ItemError,
    OptimizationResult,
    RateLimitPolicy,
    SamplingError,
    StreamingOptimizationResult,
    WorkerDiedError,
    execute,
    imap,
    optimize,
    optimize_streaming,
    process_in_batches,
)
from amorsize.measure.sampler import SPREAD_POINTS
from amorsize.store import default_store


def square(x: int) -> int:
    return x * x


def spin(n: int) -> int:
    total = 0
    for i in range(n):
        total += i
    return total


class CallLog:
    """Appends one line per call to a file: works across threads and process workers (O_APPEND)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, x: int) -> int:
        self.log(x)
        return spin(20_000) * 0 + x * 2

    def log(self, x: int) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{x}\n".encode())
        finally:
            os.close(fd)

    def calls(self) -> list[int]:
        return [int(line) for line in self.path.read_text().split()]


class TailLog(CallLog):
    """A :class:`CallLog` whose items get ~20× heavier from position 1800 on (an input sorted by size)."""

    def __call__(self, x: int) -> int:
        self.log(x)
        end = time.perf_counter() + (0.001 if x >= 1800 else 0.00005)
        while time.perf_counter() < end:
            pass
        return x * 2


@pytest.fixture
def fits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The row counts of every history fit from now on (the in-process cache of fits emptied)."""
    counts: list[int] = []
    real = amorsize.api.estimate_correction
    monkeypatch.setattr(
        amorsize.api, "estimate_correction", lambda rows: counts.append(len(rows)) or real(rows)
    )
    monkeypatch.setattr(amorsize.api, "_corrections", {})
    return counts


class TestOptimize:
    def test_tiny_work_stays_serial(self) -> None:
        result = optimize(square, range(10_000))
        assert isinstance(result, OptimizationResult)
        assert result.executor == "serial"
        assert result.n_jobs == 1
        assert result.estimated_speedup == pytest.approx(1.0)
        assert "serial" in result.reason.lower() or "slower" in result.reason.lower()

    @pytest.mark.timeout(60)
    def test_waiting_work_goes_to_many_threads(self) -> None:
        def wait(x: float) -> float:
            time.sleep(x)
            return x

        result = optimize(wait, [0.005] * 2000, profile=True)
        assert result.executor == "threads"
        assert result.n_jobs > os.cpu_count()  # type: ignore[operator]
        assert result.profile is not None and result.profile.cpu_ratio < 0.5

    def test_generator_data_is_kept_whole(self) -> None:
        result = optimize(square, (x for x in range(500)))
        assert list(result.data) == list(range(500))

    def test_empty_data(self) -> None:
        result = optimize(square, [])
        assert result.executor == "serial"
        assert "empty" in result.reason
        assert list(result.data) == []

    def test_profile_diagnostics(self) -> None:
        result = optimize(spin, [20_000] * 200, profile=True)
        diagnostics = result.profile
        assert diagnostics is not None
        assert diagnostics.n_sampled >= 1
        assert len(diagnostics.item_durations) == diagnostics.n_sampled
        assert diagnostics.coefficient_of_variation >= 0
        assert set(diagnostics.breakdown) == {"startup", "dispatch", "transfer", "compute", "imbalance"}
        assert diagnostics.machine.usable_cores >= 1

    def test_verbose_explains(self, capsys: pytest.CaptureFixture[str]) -> None:
        optimize(square, range(1000), verbose=True)
        err = capsys.readouterr().err
        assert "measured" in err and "chosen" in err and "why" in err

    def test_failing_item(self) -> None:
        def bad(x: int) -> int:
            raise RuntimeError("no")

        with pytest.raises(SamplingError, match="item 0"):
            optimize(bad, range(10))

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"n_jobs": 0}, "n_jobs"),
            ({"chunksize": -1}, "chunksize"),
            ({"executor": "gpu"}, "executor"),
            ({"target_chunk_duration": 0}, "target_chunk_duration"),
            ({"sample_size": 0}, "sample_size"),
        ],
    )
    def test_bad_arguments(self, kwargs: dict[str, Any], match: str) -> None:
        with pytest.raises(ConfigurationError, match=match):
            optimize(square, range(10), **kwargs)

    def test_forced_plan_is_respected(self) -> None:
        result = optimize(square, range(1000), executor="threads", n_jobs=3, chunksize=7)
        assert (result.executor, result.n_jobs, result.chunksize) == ("threads", 3, 7)


class TestExecute:
    @pytest.mark.timeout(60)
    @pytest.mark.parametrize("executor", [None, "serial", "threads", "processes"])
    def test_each_item_runs_exactly_once(self, tmp_path: Path, executor: str | None) -> None:
        log = CallLog(tmp_path / "calls.txt")
        data = (x for x in range(300))  # a generator: sampled items must not be lost or re-run
        results = execute(log, data, executor=executor)
        assert results == [2 * x for x in range(300)]
        assert sorted(log.calls()) == list(range(300))

    @pytest.mark.timeout(60)
    def test_a_short_waiting_input_runs_whole_in_the_dry_run(self) -> None:
        calls: list[int] = []

        def nap(x: int) -> int:
            calls.append(x)
            time.sleep(0.02)
            return -x

        results, report = execute(nap, list(range(100)), return_report=True)
        assert results == [-x for x in range(100)]
        assert sorted(calls) == list(range(100))
        assert report.items_from_dry_run == 100  # a thread per item while the first one waited

    @pytest.mark.timeout(60)
    @pytest.mark.parametrize(
        "options",
        [
            {"n_jobs": 8},
            {"max_workers": 8},
            {"rate_limit": RateLimitPolicy(calls_per_second=1000)},
            {"timeout": 5.0},
        ],
        ids=["n_jobs", "max_workers", "rate_limit", "timeout"],
    )
    def test_no_head_start_when_the_user_bounds_the_calls(self, options: dict[str, Any]) -> None:
        def nap(x: int) -> int:
            time.sleep(0.02)
            return -x

        results, report = execute(nap, list(range(60)), return_report=True, **options)
        assert results == [-x for x in range(60)]
        assert report.items_from_dry_run < 20

    @pytest.mark.parametrize("options", [{}, {"n_jobs": 1}])
    def test_a_serial_run_makes_no_dry_run(self, options: dict[str, Any]) -> None:
        # nothing to plan: the run measures its own chunks (the dry run cost a serial run ~4 ms)
        results, report = execute(abs, range(-5000, 5000), executor="serial", return_report=True, **options)
        assert results == [abs(x) for x in range(-5000, 5000)]
        assert report.items_from_dry_run == 0 and report.predicted_seconds is None

    def test_optimize_does_not_run_a_waiting_input_whole(self) -> None:
        def nap(x: int) -> int:
            time.sleep(0.02)
            return x

        assert optimize(nap, list(range(60))).n_sampled < 20  # its results would be thrown away

    @pytest.mark.timeout(60)
    @pytest.mark.parametrize("executor", [None, "threads", "processes"])
    def test_items_sampled_further_along_run_once(self, tmp_path: Path, executor: str | None) -> None:
        log = TailLog(tmp_path / "calls.txt")
        results, report = execute(log, list(range(2000)), executor=executor, return_report=True)
        assert results == [2 * x for x in range(2000)]
        assert sorted(log.calls()) == list(range(2000))
        assert report.items_from_dry_run > SPREAD_POINTS  # the first items and the later positions

    @pytest.mark.timeout(60)
    def test_a_checkpoint_keeps_the_items_sampled_further_along(self, tmp_path: Path) -> None:
        log = TailLog(tmp_path / "calls.txt")
        execute(log, list(range(2000)), checkpoint="tail", keep_checkpoint=True, executor="serial")
        first = len(log.calls())
        again = execute(log, list(range(2000)), checkpoint="tail")
        assert again == [2 * x for x in range(2000)]
        assert len(log.calls()) == first == 2000  # the resumed run computed nothing again

    @pytest.mark.timeout(60)
    def test_report(self) -> None:
        results, report = execute(spin, [20_000] * 300, return_report=True)
        assert results == [spin(20_000)] * 300
        assert report.status == "completed"
        assert report.n_items == 300
        assert report.items_from_dry_run >= 1
        assert report.predicted_seconds is not None

    @pytest.mark.timeout(60)
    def test_item_error_names_the_index(self) -> None:
        def fails_at_250(x: int) -> int:
            if x == 250:
                raise KeyError(x)
            return spin(5_000)

        with pytest.raises(ItemError) as info:
            execute(fails_at_250, range(400), executor="processes", n_jobs=2)
        assert info.value.index == 250
        assert isinstance(info.value.__cause__, KeyError)

    @pytest.mark.timeout(60)
    def test_dead_worker_is_reported_fast(self) -> None:
        def dies_at_100(x: int) -> int:
            if x == 100:
                os.kill(os.getpid(), 9)
            return x

        start = time.perf_counter()
        with pytest.raises(WorkerDiedError) as info:
            execute(dies_at_100, range(300), executor="processes", n_jobs=2, chunksize=10)
        assert time.perf_counter() - start < 10
        assert info.value.signal_name == "SIGKILL"
        assert 100 in info.value.indices

    @pytest.mark.timeout(60)
    def test_collect_keeps_going(self) -> None:
        def odd_fails(x: int) -> int:
            if x % 2:
                raise ValueError(x)
            return x

        results, report = execute(
            odd_fails,
            range(1, 41),
            on_error="collect",
            placeholder=-1,
            return_report=True,
            executor="threads",
        )
        assert results == [-1 if x % 2 else x for x in range(1, 41)]
        assert report.n_failed == 20

    def test_empty(self) -> None:
        assert execute(square, []) == []

    @pytest.mark.timeout(60)
    def test_forced_chunksize_is_kept(self) -> None:
        results, report = execute(square, range(2000), n_jobs=2, chunksize=7, return_report=True)
        assert results == [x * x for x in range(2000)]
        assert report.final_chunksize == 7
        assert all(chunk.size <= 7 for chunk in report.chunks)

    def test_unknown_option_is_named(self) -> None:
        with pytest.raises(ConfigurationError, match="samplesize"):
            execute(square, range(3), samplesize=3)

    @pytest.mark.timeout(60)
    def test_history_is_recorded(self) -> None:
        execute(square, range(1234))
        rows = default_store().runs(limit=5)
        assert any(row["n_items"] == 1234 for row in rows)

    @pytest.mark.timeout(60)
    def test_history_feeds_the_calibration(self) -> None:
        from amorsize.api import _calibrated
        from amorsize.measure.machine import machine_key, probe_machine

        for _ in range(3):
            execute(spin, [20_000] * 300, executor="processes", n_jobs=2)
        row = default_store().runs(limit=1)[0]
        machine = probe_machine()
        assert row["machine"] == machine_key(machine.start_method)
        assert row["predicted_startup"] >= 0 and row["predicted_dispatch"] >= 0
        from amorsize.core.calibration import apply_correction, estimate_correction

        rows = [r for r in default_store().runs(limit=200) if r.get("machine") == row["machine"]]
        # the estimate cached here, and the one the store keeps, may predate the last few runs
        # (the store is shared by the whole test session: other tests' runs decide whether the
        # kept one is still fresh enough to reuse)
        amorsize.api._corrections.clear()
        default_store().delete(amorsize.api.CORRECTION_NAMESPACE, row["machine"])
        assert _calibrated(machine) == apply_correction(machine, estimate_correction(rows))

    @pytest.mark.timeout(60)
    def test_calibration_is_reestimated_as_history_grows(self, fits: list[int]) -> None:
        from amorsize.api import CALIBRATION_REFRESH, _calibrated
        from amorsize.measure.machine import machine_key, probe_machine

        machine = probe_machine()
        store = default_store()
        for _ in range(30):  # enough history that one more run does not refit
            store.record_run({"executor": "serial", "machine": machine_key(machine.start_method)})
        _calibrated(machine)
        _calibrated(machine)
        assert len(fits) == 1  # nothing new: the estimate is reused
        used = fits[0]
        for _ in range(int(CALIBRATION_REFRESH * used)):
            store.record_run({"executor": "serial", "machine": machine_key(machine.start_method)})
        _calibrated(machine)
        assert len(fits) == 1  # a few runs more: still reused
        store.record_run({"executor": "serial", "machine": machine_key(machine.start_method)})
        _calibrated(machine)
        assert len(fits) == 2  # more than CALIBRATION_REFRESH of the runs it used are new: refit

    @pytest.mark.timeout(60)
    def test_a_new_process_reuses_the_correction_the_store_keeps(
        self, fits: list[int], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from amorsize.api import CORRECTION_KEPT_FROM, CORRECTION_NAMESPACE, _calibrated
        from amorsize.measure.machine import machine_key, probe_machine

        machine = probe_machine()
        key = machine_key(machine.start_method)
        store = default_store()
        store.delete(CORRECTION_NAMESPACE, key)  # kept by an earlier test
        for _ in range(CORRECTION_KEPT_FROM + 5):
            store.record_run({"executor": "serial", "machine": key})
        first = _calibrated(machine)
        assert len(fits) == 1
        assert store.get(CORRECTION_NAMESPACE, key)["rows"] >= CORRECTION_KEPT_FROM + 5
        monkeypatch.setattr(amorsize.api, "_corrections", {})  # as in a new process
        assert _calibrated(machine) == first
        assert len(fits) == 1  # read from the store, not fitted again
        store.put(CORRECTION_NAMESPACE, key, {"last_run": 1, "rows": 5, "correction": {"terms": "?"}})
        monkeypatch.setattr(amorsize.api, "_corrections", {})
        assert _calibrated(machine) == first  # a damaged value is ignored: fitted again
        assert len(fits) == 2

    @pytest.mark.timeout(60)
    def test_forced_process_plan_caps_blas_threads(self) -> None:
        pytest.importorskip("numpy")

        def threads_in_worker(_: int) -> int:
            from threadpoolctl import threadpool_info

            return max((info["num_threads"] for info in threadpool_info()), default=1)

        import numpy  # noqa: F401  (load BLAS in the parent so workers inherit it)

        counts = execute(threads_in_worker, range(4), executor="processes", n_jobs=2, chunksize=1)
        assert max(counts) <= max(1, (os.cpu_count() or 1) // 2)

    @pytest.mark.timeout(60)
    def test_threaded_run_caps_blas_threads_and_restores_them(self) -> None:
        pytest.importorskip("numpy")
        import numpy  # noqa: F401  (loads BLAS)
        from threadpoolctl import threadpool_info

        from amorsize.measure.sampler import blas_threads_loaded

        def threads_now(_: int) -> int:
            return max((info["num_threads"] for info in threadpool_info()), default=1)

        before = blas_threads_loaded()
        counts = execute(threads_now, range(8), executor="threads", n_jobs=2, chunksize=1)
        assert max(counts) <= max(1, (os.cpu_count() or 1) // 2)
        assert blas_threads_loaded() == before  # the limit ends with the run

    @pytest.mark.timeout(60)
    def test_parallel_blas_runs_start_without_openblas_spinning(
        self, fresh_python: Callable[..., str], openblas_script: Callable[[str], str]
    ) -> None:
        # a fresh interpreter: this one may have threads (Dask's, from other tests) that keep the
        # pool up, as they should
        script = openblas_script(
            """
        from amorsize.api import _blas_limited, _quiet_blas

        a @ a  # uncapped: OpenBLAS's helper spins ~100 ms after it
        spinning = cpu_while_sleeping()
        a @ a
        with _blas_limited(1):  # a threaded run
            quiet = cpu_while_sleeping()
            assert float((a @ a)[0, 0]) == 400.0  # capped calls still work
        after = cpu_while_sleeping()  # lifting the cap restarted the pool: stopped again
        assert float((a @ a)[0, 0]) == 400.0  # and uncapped ones after: the pool starts again
        _quiet_blas()  # a process run
        quiet_for_processes = cpu_while_sleeping()
        assert float((a @ a)[0, 0]) == 400.0
        print(quiet, after, quiet_for_processes, spinning)
        """
        )
        stdout = fresh_python(script, timeout=50)
        quiet, after, quiet_for_processes, spinning = map(float, stdout.split())
        assert max(quiet, after, quiet_for_processes) < 0.02 <= spinning, stdout

    def test_blas_pool_kept_while_another_thread_may_call_it(self, monkeypatch: pytest.MonkeyPatch) -> None:
        pytest.importorskip("numpy")
        from threadpoolctl import threadpool_info

        if max((i["num_threads"] for i in threadpool_info()), default=1) < 2:
            pytest.skip("BLAS runs one thread here: nothing is limited")
        import amorsize.api
        from amorsize import _native

        stopped: list[int] = []
        monkeypatch.setattr(_native, "stop_openblas_threads", lambda controller: stopped.append(1))
        release = threading.Event()
        other = threading.Thread(target=release.wait, name="user-thread", daemon=True)
        other.start()
        try:
            assert not _native.only_caller_runs_user_code()
            with amorsize.api._blas_limited(1):
                pass
        finally:
            release.set()
            other.join()
        assert stopped == []

    @pytest.mark.timeout(60)
    def test_second_run_reuses_the_pool(self) -> None:
        from amorsize.run.pools import warm_workers

        execute(spin, [1000] * 50, executor="processes", n_jobs=2, chunksize=5)
        assert warm_workers().get("processes", 0) >= 2


class TestImap:
    @pytest.mark.timeout(60)
    def test_lazy_and_bounded(self) -> None:
        pulled = itertools.count()

        def source() -> Iterator[int]:
            for x in range(10**9):
                next(pulled)
                yield x

        results = imap(square, source())
        first = [next(results) for _ in range(5)]
        results.close()
        assert first == [0, 1, 4, 9, 16]
        assert next(pulled) < 1_000_000

    def test_nothing_happens_before_iteration(self) -> None:
        calls: list[int] = []
        imap(calls.append, range(10))
        assert calls == []

    @pytest.mark.timeout(60)
    def test_unordered_is_complete(self) -> None:
        assert sorted(imap(square, range(2000), ordered=False, executor="threads", n_jobs=4)) == [
            x * x for x in range(2000)
        ]

    def test_bad_argument_raises_at_call(self) -> None:
        with pytest.raises(ConfigurationError):
            imap(square, range(3), n_jobs=-2)


class TestStreamingAndBatches:
    def test_optimize_streaming(self) -> None:
        result = optimize_streaming(spin, (20_000 for _ in range(10**6)))
        assert isinstance(result, StreamingOptimizationResult)
        assert result.use_ordered in (True, False)
        assert next(iter(result.data)) == 20_000

    def test_streaming_prefers_unordered_for_varied_items(self) -> None:
        sizes = itertools.cycle([1_000, 200_000])
        result = optimize_streaming(spin, (next(sizes) for _ in range(10**5)))
        assert result.use_ordered is False
        assert optimize_streaming(spin, iter([1000] * 100), prefer_ordered=True).use_ordered

    @pytest.mark.timeout(60)
    def test_process_in_batches(self, capsys: pytest.CaptureFixture[str]) -> None:
        results = process_in_batches(square, range(1000), batch_size=300, verbose=True)
        assert results == [x * x for x in range(1000)]
        assert "batch 4 done" in capsys.readouterr().err

    @pytest.mark.timeout(60)
    def test_process_in_batches_computes_batch_size(self, tmp_path: Path) -> None:
        log = CallLog(tmp_path / "calls.txt")
        results = process_in_batches(log, iter(range(200)))
        assert results == [2 * x for x in range(200)]
        assert sorted(log.calls()) == list(range(200))

    def test_bad_memory_fraction(self) -> None:
        with pytest.raises(ConfigurationError, match="max_memory_percent"):
            process_in_batches(square, range(3), max_memory_percent=2)


def test_threads_left_behind_are_daemons() -> None:
    execute(square, range(100), executor="threads", n_jobs=2, chunksize=10)
    assert all(t.daemon for t in threading.enumerate() if t is not threading.main_thread())
