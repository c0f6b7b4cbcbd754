"""What this computer offers a run: usable cores, memory, start method, and *measured* costs.

:func:`probe_machine` gathers it into a :class:`~amorsize.core.types.Machine`. The costs come from
:func:`calibrate`, which is run once per machine and start method and then kept in the store
(namespace ``"calibration"``, key :func:`machine_key`), so later processes reuse them.

How :func:`calibrate` measures (on the 2-core dev VM: ~0.06 s with fork; 0.2–0.5 s with spawn, whose
workers also re-import the main module)::

    parent                                             worker processes (_calibrate_worker.serve)
    ──────                                             ──────────────────────────────────────────
    start() ──────────────── ping ─────────────────►   (start-up: interpreter, imports, unpickling)
    ◄──────────────────────── ping ─────────────────   start-up = start() → answer, median of 3
    burst: 200 small messages, round-robin over 2  ►   echo each
    ◄──────────────────────── 200 echoes ───────────   per-task = elapsed / 200, median of 3 bursts
    BLOB + 4 MiB raw bytes (send_bytes) ───────────►   recv_bytes
    ◄──────────────────────── its length ───────────   bandwidth = bytes / elapsed, median of 5
                                                       (after a warm-up round)
    STOP ──────────────────────────────────────────►   return; parent joins (terminates if stuck)

    threads: 20 × Thread.start() (start-up, median); ThreadPoolExecutor(2): bursts of 200 no-op
    tasks (per-task = elapsed / 200, median of 3).
"""

from __future__ import annotations

import contextlib
import functools
import math
import multiprocessing
import os
import platform
import statistics
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from multiprocessing.connection import Connection, wait
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import loky
import psutil

from amorsize.core.types import Machine, MachineCosts
from amorsize.errors import ConfigurationError, StoreError
from amorsize.measure._calibrate_worker import BLOB, STOP, serve
from amorsize.measure.gil import free_threaded
from amorsize.store import Store, default_store

__all__ = [
    "CALIBRATION_NAMESPACE",
    "CALIBRATION_VERSION",
    "START_METHOD_ENV",
    "calibrate",
    "default_start_method",
    "machine_key",
    "memory_info",
    "physical_cores",
    "probe_machine",
    "usable_cores",
]

#: Environment variable that chooses the start method (below an explicit argument).
START_METHOD_ENV = "AMORSIZE_START_METHOD"

#: Store namespace of the calibrated costs.
CALIBRATION_NAMESPACE = "calibration"

#: Part of :func:`machine_key`: bump it when the way :func:`calibrate` measures changes, so that
#: figures measured the old way are not reused.
CALIBRATION_VERSION = 1

#: Worker start-ups timed (their median is the figure). 3 gives a median robust to one outlier (the
#: first forkserver start also starts the server: 58 ms against 10 ms for the next two on the 2-core
#: dev VM); spawn costs ~65 ms per start there, so 3 stay well inside the ~1 s budget.
STARTUP_SAMPLES = 3

#: Stop taking start-up samples (keeping at least one) once they have used this many seconds, so a
#: slow machine (spawn at ~1 s per start) still calibrates in about a second.
STARTUP_BUDGET = 0.6

#: Workers the pipelined burst uses: two keep the parent's dispatch the bottleneck (as in a pool)
#: while staying within the 2 cores of small machines.
BURST_WORKERS = 2

#: Messages in one pipelined burst, and bursts timed (median). 200 tiny messages take ~3–5 ms
#: (12–25 µs each on the dev VM), long enough to time and far below the 64 KiB pipe buffers.
BURST_MESSAGES = 200
BURST_ROUNDS = 3

#: Bandwidth payload and rounds (median, after one warm-up round). 4 MiB takes ~5 ms at the
#: 450–1100 MB/s seen on the dev VM, whose single rounds varied 3× (the first, paying page faults on
#: the receiving side, was the slowest by 2×): hence a warm-up and a median of 5.
BLOB_BYTES = 4 * 2**20
BLOB_ROUNDS = 5

#: Threads started one by one to time thread start-up (median); ~50–100 µs each.
THREAD_SAMPLES = 20

#: Seconds to wait for any one answer from a calibration worker before giving up (and falling
#: back). 10 s is ~150× a spawn start-up on the dev VM: only a broken or frozen worker reaches it.
REPLY_TIMEOUT = 10.0

#: Seconds to wait for a stopped worker to exit before terminating, then killing, it.
JOIN_TIMEOUT = 2.0

#: cgroup v1 reports "no limit" as PAGE_COUNTER_MAX pages in bytes (0x7FFFFFFFFFFFF000 with 4 KiB
#: pages, slightly less with 64 KiB pages); no real limit comes near 2**62 bytes (4 EiB).
_V1_UNLIMITED = 2**62


# -- cores ---------------------------------------------------------------------------------------


def usable_cores() -> int:
    """Cores this process may really use: min of logical cores, CPU affinity and cgroup CPU quota.

    Uses ``loky.cpu_count()``, which also honours ``LOKY_MAX_CPU_COUNT``.

    Returns:
        At least 1.
    """
    return max(1, int(loky.cpu_count()))


def physical_cores() -> int:
    """Physical cores (psutil; the logical count when unknown), capped at :func:`usable_cores`.

    Returns:
        At least 1.
    """
    usable = usable_cores()
    try:
        physical = psutil.cpu_count(logical=False)
    except Exception:  # psutil raises assorted errors on exotic platforms: treat as unknown
        physical = None
    if not physical:
        physical = os.cpu_count() or usable
    return max(1, min(int(physical), usable))


# -- memory --------------------------------------------------------------------------------------


def _read_int(path: Path) -> int | None:
    """The integer in a cgroup file; None when missing, unreadable, "max" or an unlimited v1 value."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if not text or text == "max":
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return None if value >= _V1_UNLIMITED or value < 0 else value


def _reclaimable(stat_file: Path, field: str) -> int:
    """Bytes of page cache the kernel can drop (``inactive_file``) from a cgroup memory.stat."""
    try:
        for line in stat_file.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == field:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _own_cgroup(proc_cgroup: Path, v2: bool) -> str:
    """This process's cgroup path (relative to the hierarchy root) from /proc/self/cgroup, or ""."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return ""
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if (v2 and hierarchy == "0" and controllers == "") or (not v2 and "memory" in controllers.split(",")):
            return path.strip().lstrip("/")
    return ""


def _cgroup_dirs(base: Path, relative: str) -> list[Path]:
    """``base/relative`` and each of its ancestors up to ``base``: every limit on the way applies."""
    dirs = [base]
    current = base
    for part in Path(relative).parts if relative else ():
        current = current / part
        dirs.append(current)
    return dirs[::-1]


def memory_info(
    cgroup_root: Path = Path("/sys/fs/cgroup"), *, proc_cgroup: Path = Path("/proc/self/cgroup")
) -> tuple[int, int | None]:
    """Memory available now and the cgroup memory limit.

    Reads cgroup v2 (``memory.max``, ``memory.current``) or v1 (``memory/memory.limit_in_bytes``,
    ``memory/memory.usage_in_bytes``) at this process's own cgroup (from ``proc_cgroup``) and its
    ancestors, and at the root itself (what a container sees). Usage excludes reclaimable page cache
    (``inactive_file`` of ``memory.stat``), as ``docker stats`` does.

    Args:
        cgroup_root: where the cgroup file systems are mounted (tests pass a fixture tree).
        proc_cgroup: the ``/proc/self/cgroup`` file naming this process's cgroups.

    Returns:
        ``(available_bytes, limit_bytes)``: available is psutil's available memory, capped by the
        tightest cgroup limit minus that cgroup's usage; limit is that cgroup limit, or None when no
        cgroup limits memory.
    """
    available = int(psutil.virtual_memory().available)
    if (cgroup_root / "cgroup.controllers").exists():  # cgroup v2, unified
        base, limit_name, usage_name, stat_field = (
            cgroup_root,
            "memory.max",
            "memory.current",
            "inactive_file",
        )
        v2 = True
    else:  # cgroup v1 (or hybrid: the memory controller is still v1)
        base = cgroup_root / "memory"
        limit_name, usage_name, stat_field = (
            "memory.limit_in_bytes",
            "memory.usage_in_bytes",
            "total_inactive_file",
        )
        v2 = False
    limit: int | None = None
    for directory in _cgroup_dirs(base, _own_cgroup(proc_cgroup, v2)):
        dir_limit = _read_int(directory / limit_name)
        if dir_limit is None:
            continue
        usage = _read_int(directory / usage_name) or 0
        usage = max(0, usage - _reclaimable(directory / "memory.stat", stat_field))
        available = min(available, max(0, dir_limit - usage))
        limit = dir_limit if limit is None else min(limit, dir_limit)
    return available, limit


# -- start method --------------------------------------------------------------------------------


def _platform_default_start_method() -> str:
    # multiprocessing.get_start_method() would *fix* the default as a side effect (a later
    # set_start_method by the user then fails), so restate Python's rule instead.
    if sys.platform in ("win32", "darwin"):
        return "spawn"
    return "forkserver" if sys.version_info >= (3, 14) else "fork"


def _check_start_method(name: str, origin: str) -> str:
    valid = multiprocessing.get_all_start_methods()
    if name not in valid:
        raise ConfigurationError(
            f"start method must be one of {', '.join(valid)} on this platform (got {name!r} from {origin})"
        )
    return name


def default_start_method(start_method: str | None = None) -> str:
    """The multiprocessing start method runs will use.

    In order: the argument, ``$AMORSIZE_START_METHOD``, what the program set with
    ``multiprocessing.set_start_method``, the platform default (fork on Linux before Python 3.14,
    forkserver from 3.14, spawn on macOS and Windows).

    Args:
        start_method: an explicit choice, or None.

    Returns:
        ``"fork"``, ``"spawn"`` or ``"forkserver"``.

    Raises:
        ConfigurationError: the argument or the variable names no start method of this platform.
    """
    if start_method is not None:
        return _check_start_method(start_method, "the start_method argument")
    env = os.environ.get(START_METHOD_ENV, "").strip()
    if env:
        return _check_start_method(env, f"${START_METHOD_ENV}")
    chosen = multiprocessing.get_start_method(allow_none=True)
    return chosen if chosen is not None else _platform_default_start_method()


# -- calibration ---------------------------------------------------------------------------------


class _CalibrationFailed(Exception):
    """A measurement could not be completed (worker died, did not answer, bad figure)."""


class _Worker:
    """One calibration worker process and the parent's end of its pipe."""

    def __init__(self, process: BaseProcess, conn: Connection) -> None:
        self.process = process
        self.conn = conn

    def receive(self, timeout: float) -> Any:
        """The worker's next answer, waiting at most ``timeout`` seconds."""
        if self.conn.poll(0):
            return self.conn.recv()
        ready = wait([self.conn, self.process.sentinel], timeout)
        if self.conn in ready:
            return self.conn.recv()
        if ready:
            raise _CalibrationFailed(f"calibration worker exited with code {self.process.exitcode}")
        raise _CalibrationFailed(f"calibration worker did not answer within {timeout:g} s")


def _start_worker(ctx: BaseContext, workers: list[_Worker], timeout: float) -> float:
    """Start one worker (appended to ``workers`` for cleanup) and time it until it answers a ping."""
    parent_conn, child_conn = ctx.Pipe(duplex=True)
    process = ctx.Process(target=serve, args=(child_conn,), name="amorsize-calibrate", daemon=True)  # type: ignore[attr-defined]
    started = time.perf_counter()
    try:
        process.start()
    except BaseException:
        parent_conn.close()
        raise
    finally:
        child_conn.close()  # the child has its own copy (or got it pickled); EOF reaches it when we close
    worker = _Worker(process, parent_conn)
    workers.append(worker)
    parent_conn.send(0)
    if worker.receive(timeout) != 0:
        raise _CalibrationFailed("calibration worker answered the ping wrongly")
    return time.perf_counter() - started


def _stop_workers(workers: Sequence[_Worker]) -> None:
    """Ask every worker to stop, then make sure each has exited (terminate, then kill)."""
    for worker in workers:
        with contextlib.suppress(OSError, ValueError):  # already gone, or the pipe is closed
            worker.conn.send(STOP)
    deadline = time.monotonic() + JOIN_TIMEOUT
    for worker in workers:
        process = worker.process
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.terminate()
            process.join(JOIN_TIMEOUT)
        if process.is_alive():
            process.kill()
            process.join()
        worker.conn.close()
        process.close()


def _time_burst(workers: Sequence[_Worker], n: int, timeout: float) -> float:
    """Seconds per message of ``n`` small messages sent round-robin, pipelined, and all answered."""
    started = time.perf_counter()
    for i in range(n):
        workers[i % len(workers)].conn.send(i)
    for i in range(n):
        if workers[i % len(workers)].receive(timeout) != i:
            raise _CalibrationFailed("calibration worker answered out of order")
    return (time.perf_counter() - started) / n


def _time_blob(worker: _Worker, payload: bytes, timeout: float) -> float:
    """Bytes per second of one raw payload to a worker (until it acknowledges the length)."""
    started = time.perf_counter()
    worker.conn.send(BLOB)
    worker.conn.send_bytes(payload)
    if worker.receive(timeout) != len(payload):
        raise _CalibrationFailed("calibration worker received a payload of the wrong size")
    return len(payload) / (time.perf_counter() - started)


def _measure_processes(start_method: str, timeout: float) -> tuple[float, float, float]:
    """(start-up seconds, per-task seconds, bandwidth bytes/s) for worker processes."""
    ctx = multiprocessing.get_context(start_method)
    workers: list[_Worker] = []
    try:
        startups: list[float] = []
        for _ in range(STARTUP_SAMPLES):
            startups.append(_start_worker(ctx, workers, timeout))
            if sum(startups) > STARTUP_BUDGET:
                break
        burst_workers = workers[: max(1, min(BURST_WORKERS, usable_cores()))]
        _time_burst(burst_workers, 2 * len(burst_workers), timeout)  # warm both paths
        per_task = statistics.median(
            _time_burst(burst_workers, BURST_MESSAGES, timeout) for _ in range(BURST_ROUNDS)
        )
        payload = bytes(BLOB_BYTES)
        _time_blob(workers[0], payload, timeout)  # warm: the first round pays the page faults
        bandwidth = statistics.median(_time_blob(workers[0], payload, timeout) for _ in range(BLOB_ROUNDS))
        return statistics.median(startups), per_task, bandwidth
    finally:
        _stop_workers(workers)


def _noop() -> None:
    return None


def _measure_threads() -> tuple[float, float]:
    """(start-up seconds, per-task seconds) for threads."""
    startups: list[float] = []
    threads: list[threading.Thread] = []
    try:
        for _ in range(THREAD_SAMPLES):
            thread = threading.Thread(target=_noop, name="amorsize-calibrate", daemon=True)
            started = time.perf_counter()
            thread.start()  # returns once the new thread runs
            startups.append(time.perf_counter() - started)
            threads.append(thread)
    finally:
        for thread in threads:
            thread.join()
    with ThreadPoolExecutor(max_workers=BURST_WORKERS, thread_name_prefix="amorsize-calibrate") as pool:
        for future in [pool.submit(_noop) for _ in range(BURST_WORKERS)]:
            future.result()  # warm: the pool's threads now exist

        def burst() -> float:
            started = time.perf_counter()
            for future in [pool.submit(_noop) for _ in range(BURST_MESSAGES)]:
                future.result()
            return (time.perf_counter() - started) / BURST_MESSAGES

        per_task = statistics.median(burst() for _ in range(BURST_ROUNDS))
    return statistics.median(startups), per_task


def calibrate(start_method: str, *, reply_timeout: float = REPLY_TIMEOUT) -> MachineCosts:
    """Measure what running work off the calling thread costs on this machine (0.05–0.5 s).

    Starts a few worker processes with ``start_method`` and times their start-up, a pipelined burst
    of small messages and a raw byte payload; then times thread start-up and a thread pool's
    per-task cost (see the module diagram). Workers are always stopped before returning.

    Args:
        start_method: ``"fork"``, ``"spawn"`` or ``"forkserver"``.
        reply_timeout: seconds to wait for any one answer from a worker before giving up.

    Returns:
        The measured costs (``source="measured"``), or ``MachineCosts.fallback(start_method)`` when
        anything fails during measuring (no processes allowed, a worker died or hung, a figure
        came out non-finite).

    Raises:
        ConfigurationError: ``start_method`` is not a start method of this platform (a caller's
            mistake, not a measuring failure).
    """
    _check_start_method(start_method, "the start_method argument")
    try:
        process_startup, process_task, bandwidth = _measure_processes(start_method, reply_timeout)
        thread_startup, thread_task = _measure_threads()
    except Exception:  # any failure while measuring: the documented fallback, never an error
        return MachineCosts.fallback(start_method)
    figures = (process_startup, process_task, bandwidth, thread_startup, thread_task)
    if not all(math.isfinite(x) and x > 0 for x in figures):
        return MachineCosts.fallback(start_method)
    return MachineCosts(
        process_startup=process_startup,
        process_task_overhead=process_task,
        pipe_bandwidth=bandwidth,
        thread_startup=thread_startup,
        thread_task_overhead=thread_task,
        source="measured",
    )


# -- the probe -----------------------------------------------------------------------------------


@functools.cache
def _cpu_model() -> str:
    """The CPU's model name (read once per process: ``/proc/cpuinfo`` on Linux)."""
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
                for line in cpuinfo:
                    if line.startswith("model name"):
                        return line.partition(":")[2].strip()
        except OSError:
            pass
    return platform.processor() or platform.machine()


def machine_key(start_method: str) -> str:
    """The store key of this machine's calibration for one start method.

    Joins what the costs depend on: calibration version, host name, OS and architecture, Python
    implementation and version, CPU model, usable cores and the start method.

    Args:
        start_method: the start method the costs are for.

    Returns:
        e.g. ``"v1|myhost|linux-x86_64|CPython-3.11.7|AMD EPYC|2 cores|fork"``.
    """
    return "|".join(
        (
            f"v{CALIBRATION_VERSION}",
            platform.node(),
            f"{sys.platform}-{platform.machine()}",
            f"{platform.python_implementation()}-{platform.python_version()}",
            _cpu_model(),
            f"{usable_cores()} cores",
            start_method,
        )
    )


_COST_FIELDS = (
    "process_startup",
    "process_task_overhead",
    "pipe_bandwidth",
    "thread_startup",
    "thread_task_overhead",
)


def stored_figures(value: Any, names: Sequence[str]) -> dict[str, float] | None:
    """The fields ``names`` of a stored record as floats, or None unless each is a finite number > 0.

    Args:
        value: what the store returned (None, or any JSON value when the record is malformed).
        names: the fields to read.

    Returns:
        ``{name: value}``, or None when ``value`` is not a dict or a field is missing or invalid.
    """
    if not isinstance(value, dict):
        return None
    figures: dict[str, float] = {}
    for name in names:
        figure = value.get(name)
        if isinstance(figure, bool) or not isinstance(figure, (int, float)):
            return None
        if not (math.isfinite(figure) and figure > 0):
            return None
        figures[name] = float(figure)
    return figures


def _costs_from_store(value: Any) -> MachineCosts | None:
    """The costs in a stored calibration record, or None when it is missing or malformed."""
    figures = stored_figures(value, _COST_FIELDS)
    return None if figures is None else MachineCosts(**figures, source="measured")


class _ProbeCache:
    """Machines already probed in this process, by start method."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        # start method -> (machine, whether its costs may be re-measured on a calibrating probe)
        self.machines: dict[str, tuple[Machine, bool]] = {}


_PROBED = _ProbeCache()


def _reset_probe_lock_after_fork() -> None:
    # A parent thread may have been probing (holding the lock) when another thread forked.
    _PROBED.lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_probe_lock_after_fork)


def _store_or_warn(store: Store | None) -> Store | None:
    if store is not None:
        return store
    try:
        return default_store()
    except StoreError as exc:
        warnings.warn(f"machine calibration is not kept between runs: {exc}", RuntimeWarning, stacklevel=3)
        return None


def _load_or_measure(
    start_method: str, refresh: bool, store: Store | None, calibrate_costs: bool
) -> MachineCosts:
    key = machine_key(start_method)
    store = _store_or_warn(store)
    if store is not None and not (refresh and calibrate_costs):
        try:
            stored = _costs_from_store(store.get(CALIBRATION_NAMESPACE, key))
        except StoreError as exc:
            warnings.warn(f"could not read the machine calibration: {exc}", RuntimeWarning, stacklevel=3)
            stored = None
        if stored is not None:
            return stored
    if not calibrate_costs:
        return MachineCosts.fallback(start_method)
    costs = calibrate(start_method)
    if store is not None and costs.source == "measured":
        record = {**asdict(costs), "measured_at": time.time(), "key": key}
        try:
            store.put(CALIBRATION_NAMESPACE, key, record)
        except StoreError as exc:
            warnings.warn(f"could not save the machine calibration: {exc}", RuntimeWarning, stacklevel=3)
    return costs


def probe_machine(
    *,
    start_method: str | None = None,
    refresh: bool = False,
    store: Store | None = None,
    calibrate_costs: bool = True,
) -> Machine:
    """What this computer offers a run, with measured costs.

    Cached in this process per start method, whichever ``store`` is passed: a second call returns
    the same object, whose ``available_memory`` is as of the first call (call :func:`memory_info`
    for a fresh figure). The costs are kept in the store under :func:`machine_key` and reused by
    later processes; measuring (0.05–0.5 s) happens only when the store has none for this machine.

    Args:
        start_method: the start method to plan for; None: :func:`default_start_method`.
        refresh: probe again; with ``calibrate_costs`` also re-measure the costs (and store them).
        store: where calibrations are kept; None: :func:`~amorsize.store.default_store`. When the
            default store is unusable the costs are measured but not kept (a RuntimeWarning says so).
        calibrate_costs: False never measures: stored costs when there are some, else
            ``MachineCosts.fallback``.

    Returns:
        The :class:`~amorsize.core.types.Machine`.

    Raises:
        ConfigurationError: the start method (argument or ``$AMORSIZE_START_METHOD``) is not one
            of this platform's.
    """
    method = default_start_method(start_method)
    with _PROBED.lock:
        cached = _PROBED.machines.get(method)
        if cached is not None and not refresh:
            machine, may_measure = cached
            if not (calibrate_costs and may_measure):
                return machine
        costs = _load_or_measure(method, refresh, store, calibrate_costs)
        available, limit = memory_info()
        machine = Machine(
            logical_cores=os.cpu_count() or 1,
            usable_cores=usable_cores(),
            physical_cores=physical_cores(),
            available_memory=available,
            memory_limit=limit,
            start_method=method,
            free_threaded=free_threaded(),
            costs=costs,
        )
        # A probe that was not allowed to measure, and found nothing stored, may measure later.
        _PROBED.machines[method] = (machine, not calibrate_costs and costs.source != "measured")
        return machine
