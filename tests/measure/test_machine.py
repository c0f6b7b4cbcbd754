"""Tests of amorsize.measure.machine: cores, cgroup memory, start method, calibration, the probe."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from multiprocessing.connection import Connection
from pathlib import Path

import psutil
import pytest

import amorsize.measure.machine as machine_module
from amorsize.core.types import MachineCosts
from amorsize.errors import ConfigurationError
from amorsize.measure.machine import (
    CALIBRATION_NAMESPACE,
    calibrate,
    default_start_method,
    machine_key,
    memory_info,
    physical_cores,
    probe_machine,
    usable_cores,
)
from amorsize.store import Store

FIXTURES = Path(__file__).parent / "fixtures"
CGROUP = FIXTURES / "cgroup"
PROC = FIXTURES / "proc"
MiB = 2**20
PLATFORM_DEFAULT = (
    "spawn"
    if sys.platform in ("win32", "darwin")
    else ("forkserver" if sys.version_info >= (3, 14) else "fork")
)

#: Distinctive figures no real measurement produces: finding them proves costs came from the store.
SENTINEL = {
    "process_startup": 0.123456789,
    "process_task_overhead": 0.000123456789,
    "pipe_bandwidth": 123456789.0,
    "thread_startup": 0.0000123456789,
    "thread_task_overhead": 0.00000123456789,
}


def _assert_measured(costs: MachineCosts) -> None:
    assert costs.source == "measured"
    figures = asdict(costs)
    del figures["source"]
    assert all(math.isfinite(x) and x > 0 for x in figures.values()), figures
    assert costs.process_startup < 10.0
    assert costs.process_task_overhead < 0.1
    assert costs.pipe_bandwidth > 1e6
    assert costs.thread_startup < 0.1
    assert costs.thread_task_overhead < 0.1


@pytest.fixture
def fresh_probe() -> Iterator[None]:
    """Forget this process's probed machines, before and after the test."""
    machine_module._PROBED.machines.clear()
    yield
    machine_module._PROBED.machines.clear()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "store.sqlite3") as opened:
        yield opened


class TestUsableCores:
    def test_at_most_the_logical_cores(self) -> None:
        assert 1 <= usable_cores() <= (os.cpu_count() or 1)

    @pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs os.sched_setaffinity")
    @pytest.mark.timeout(60)
    def test_obeys_cpu_affinity_in_a_real_process(self, fresh_python: Callable[..., str]) -> None:
        out = fresh_python(
            """
            import os
            os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
            from amorsize.measure.machine import physical_cores, usable_cores
            print(usable_cores(), physical_cores())
            """
        )
        assert out == "1 1"


class TestPhysicalCores:
    def test_between_one_and_usable(self) -> None:
        assert 1 <= physical_cores() <= usable_cores()


class TestMemoryInfo:
    def _psutil_available(self) -> int:
        return int(psutil.virtual_memory().available)

    def _assert_capped(self, available: int, cap: int) -> None:
        assert 0 <= available <= cap
        if self._psutil_available() > cap + 256 * MiB:  # the cgroup, not the host, is the bound
            assert available == cap

    def test_v2_limited(self) -> None:
        available, limit = memory_info(CGROUP / "v2_limited", proc_cgroup=PROC / "root_v2")
        assert limit == 2048 * MiB
        # 2 GiB - (512 MiB used - 128 MiB reclaimable inactive page cache)
        self._assert_capped(available, 2048 * MiB - 384 * MiB)

    def test_v2_max_means_no_limit(self) -> None:
        available, limit = memory_info(CGROUP / "v2_max", proc_cgroup=PROC / "root_v2")
        assert limit is None
        assert available > 0

    def test_v2_limit_of_an_ancestor_cgroup_applies(self) -> None:
        available, limit = memory_info(CGROUP / "v2_nested", proc_cgroup=PROC / "nested_v2")
        assert limit == 1024 * MiB  # app/ limits; app/worker/ says "max"
        self._assert_capped(available, 1024 * MiB - 768 * MiB)

    def test_v1_limited(self) -> None:
        # Our own cgroup (/docker/0123abcd) is not under this root: the root's files are ours.
        available, limit = memory_info(CGROUP / "v1_limited", proc_cgroup=PROC / "docker_v1")
        assert limit == 1024 * MiB
        self._assert_capped(available, 1024 * MiB - 256 * MiB)

    def test_v1_huge_value_means_no_limit(self) -> None:
        available, limit = memory_info(CGROUP / "v1_unlimited", proc_cgroup=PROC / "docker_v1")
        assert limit is None
        assert available > 0

    def test_no_cgroup_files(self, tmp_path: Path) -> None:
        for root in (CGROUP / "missing", tmp_path / "does-not-exist"):
            available, limit = memory_info(root, proc_cgroup=tmp_path / "no-proc-file")
            assert limit is None
            assert 0 < available <= psutil.virtual_memory().total

    def test_this_machine(self) -> None:
        available, limit = memory_info()
        assert 0 < available <= psutil.virtual_memory().total
        assert limit is None or limit > 0


class TestDefaultStartMethod:
    def test_argument_wins(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("AMORSIZE_START_METHOD", "spawn")
        assert default_start_method("spawn") == "spawn"
        if "fork" in multiprocessing.get_all_start_methods():
            assert default_start_method("fork") == "fork"

    def test_environment_variable(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("AMORSIZE_START_METHOD", "spawn")
        assert default_start_method() == "spawn"

    def test_invalid_names_are_configuration_errors(self, monkeypatch: pytest.MonkeyPatch) -> None:
        with pytest.raises(ConfigurationError, match=r"one of .*spawn.*got 'threads' from the start_method"):
            default_start_method("threads")
        monkeypatch.setenv("AMORSIZE_START_METHOD", "vfork")
        with pytest.raises(ConfigurationError, match=r"got 'vfork' from \$AMORSIZE_START_METHOD"):
            default_start_method()

    def test_platform_default_without_fixing_it(
        self, monkeypatch: pytest.MonkeyPatch, fresh_python: Callable[..., str]
    ) -> None:
        monkeypatch.delenv("AMORSIZE_START_METHOD", raising=False)
        out = fresh_python(
            """
            import multiprocessing
            from amorsize.measure.machine import default_start_method
            print(default_start_method(), multiprocessing.get_start_method(allow_none=True))
            """
        )
        assert out == f"{PLATFORM_DEFAULT} None"

    def test_what_the_program_set(
        self, monkeypatch: pytest.MonkeyPatch, fresh_python: Callable[..., str]
    ) -> None:
        monkeypatch.delenv("AMORSIZE_START_METHOD", raising=False)
        out = fresh_python(
            """
            import multiprocessing
            multiprocessing.set_start_method("spawn")
            from amorsize.measure.machine import default_start_method
            print(default_start_method())
            """
        )
        assert out == "spawn"


def _calibrate_in_daemon(conn: Connection) -> None:
    conn.send(asdict(calibrate(multiprocessing.get_start_method())))
    conn.close()


def _calibration_children() -> list[multiprocessing.process.BaseProcess]:
    """Live child processes other than pooled Amorsize workers (an earlier test's pool may be idle)."""
    return [p for p in multiprocessing.active_children() if not p.name.startswith("amorsize-worker")]


class TestCalibrate:
    @pytest.mark.wallclock
    @pytest.mark.timeout(30)
    def test_measures_the_platform_start_method(self) -> None:
        started = time.perf_counter()
        costs = calibrate(PLATFORM_DEFAULT)
        elapsed = time.perf_counter() - started
        _assert_measured(costs)
        assert _calibration_children() == []
        assert elapsed < 10.0  # budget ~1 s; generous for loaded CI machines

    @pytest.mark.timeout(30)
    def test_measures_spawn(self) -> None:
        costs = calibrate("spawn")
        _assert_measured(costs)
        assert _calibration_children() == []

    @pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
    @pytest.mark.timeout(30)
    def test_spawn_starts_slower_than_fork(self) -> None:
        assert calibrate("spawn").process_startup > calibrate("fork").process_startup

    def test_invalid_start_method_is_a_configuration_error(self) -> None:
        with pytest.raises(ConfigurationError, match="start method must be one of"):
            calibrate("threads")

    @pytest.mark.timeout(30)
    def test_a_worker_that_does_not_answer_in_time_falls_back(self) -> None:
        # A spawned interpreter needs tens of milliseconds to answer: a zero wait always fails.
        costs = calibrate("spawn", reply_timeout=0.0)
        assert costs == MachineCosts.fallback("spawn")
        assert _calibration_children() == []

    @pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
    @pytest.mark.timeout(30)
    def test_where_processes_cannot_start_it_falls_back(self) -> None:
        # A daemonic process may not have children: calibrating inside one must not raise.
        ctx = multiprocessing.get_context("fork")
        receiver, sender = ctx.Pipe(duplex=False)
        daemon = ctx.Process(target=_calibrate_in_daemon, args=(sender,), daemon=True)
        daemon.start()
        sender.close()
        assert receiver.poll(20)
        costs = receiver.recv()
        daemon.join(10)
        assert daemon.exitcode == 0
        assert costs == asdict(MachineCosts.fallback("fork"))


class TestMachineKey:
    def test_names_what_the_costs_depend_on(self) -> None:
        key = machine_key("spawn")
        assert key.endswith(f"|{usable_cores()} cores|spawn")
        assert sys.platform in key
        assert machine_key("spawn") == key
        assert machine_key("forkserver") != key


@pytest.mark.usefixtures("fresh_probe")
class TestProbeMachine:
    @pytest.mark.timeout(30)
    def test_describes_this_machine(self, store: Store) -> None:
        machine = probe_machine(store=store)
        assert machine.logical_cores == (os.cpu_count() or 1)
        assert machine.usable_cores == usable_cores()
        assert 1 <= machine.physical_cores <= machine.usable_cores
        assert machine.available_memory > 0
        assert machine.start_method == default_start_method()
        assert machine.free_threaded is (hasattr(sys, "_is_gil_enabled") and not sys._is_gil_enabled())
        _assert_measured(machine.costs)

    @pytest.mark.wallclock
    @pytest.mark.timeout(30)
    def test_cached_in_process_and_in_the_store(self, store: Store) -> None:
        first = probe_machine(store=store)
        started = time.perf_counter()
        second = probe_machine(store=store)
        assert second is first
        assert time.perf_counter() - started < 0.05
        stored = store.get(CALIBRATION_NAMESPACE, machine_key(first.start_method))
        assert stored is not None
        assert {k: stored[k] for k in SENTINEL} == {
            k: v for k, v in asdict(first.costs).items() if k in SENTINEL
        }

    @pytest.mark.timeout(60)
    def test_a_new_process_reuses_the_stored_costs(
        self, tmp_path: Path, fresh_python: Callable[..., str]
    ) -> None:
        home = tmp_path / "home"
        code = """
            import json
            from dataclasses import asdict
            from amorsize.measure.machine import probe_machine
            print(json.dumps(asdict(probe_machine().costs)))
            """
        env = {"AMORSIZE_HOME": str(home), "AMORSIZE_START_METHOD": PLATFORM_DEFAULT}
        measured = json.loads(fresh_python(code, env))  # measures and stores
        assert measured["source"] == "measured"
        assert json.loads(fresh_python(code, env)) == measured  # another measurement would differ

        # Proof that nothing is measured: figures planted in the store come back as they are.
        with Store(home / "amorsize.sqlite3") as planted:
            planted.put(CALIBRATION_NAMESPACE, machine_key(PLATFORM_DEFAULT), SENTINEL)
        assert json.loads(fresh_python(code, env)) == {**SENTINEL, "source": "measured"}

    @pytest.mark.timeout(30)
    def test_refresh_measures_again(self, store: Store) -> None:
        first = probe_machine(store=store)
        key = machine_key(first.start_method)
        store.put(CALIBRATION_NAMESPACE, key, SENTINEL)
        refreshed = probe_machine(store=store, refresh=True)
        assert refreshed is not first
        _assert_measured(refreshed.costs)
        assert refreshed.costs.process_startup != SENTINEL["process_startup"]
        stored = store.get(CALIBRATION_NAMESPACE, key)
        assert stored is not None
        assert stored["process_startup"] == refreshed.costs.process_startup
        assert probe_machine(store=store) is refreshed

    def test_without_calibration_uses_stored_costs_or_fallback(self, store: Store) -> None:
        machine = probe_machine(store=store, calibrate_costs=False, start_method="spawn")
        assert machine.costs == MachineCosts.fallback("spawn")
        assert store.items(CALIBRATION_NAMESPACE) == []  # nothing measured, nothing stored

        store.put(CALIBRATION_NAMESPACE, machine_key("spawn"), SENTINEL)
        again = probe_machine(store=store, calibrate_costs=False, start_method="spawn", refresh=True)
        assert asdict(again.costs) == {**SENTINEL, "source": "measured"}

    @pytest.mark.timeout(30)
    def test_a_fallback_probe_is_measured_when_measuring_is_allowed(self, store: Store) -> None:
        fallback = probe_machine(store=store, calibrate_costs=False)
        assert fallback.costs.source == "fallback"
        measured = probe_machine(store=store)
        _assert_measured(measured.costs)
        assert probe_machine(store=store, calibrate_costs=False) is measured

    def test_invalid_start_method_is_a_configuration_error(self, store: Store) -> None:
        with pytest.raises(ConfigurationError, match="start method must be one of"):
            probe_machine(start_method="threads", store=store)

    @pytest.mark.skipif(os.name != "posix", reason="POSIX mode bits")
    @pytest.mark.timeout(30)
    def test_an_unsafe_home_still_gives_a_machine(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        home = tmp_path / "shared"
        home.mkdir()
        os.chmod(home, 0o777)
        monkeypatch.setenv("AMORSIZE_HOME", str(home))
        with pytest.warns(RuntimeWarning, match="not kept between runs.*writable by other users"):
            machine = probe_machine()
        _assert_measured(machine.costs)
        assert not (home / "amorsize.sqlite3").exists()
