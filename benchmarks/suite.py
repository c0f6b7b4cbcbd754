"""The benchmark suite: Amorsize against an oracle, Pool and joblib defaults, and serial.

Run by hand (not in the test suite)::

    python benchmarks/suite.py                 # 13 workloads, 3 rounds (medians); ~8–11 min
    python benchmarks/suite.py --quick         # ¼ of the items, 1 round, a coarser oracle; ~70 s
    python benchmarks/suite.py --only io-sleep,fine-grained --repeat 5

For each workload (``suite_workloads.py``)::

    grid ──────────── serial; processes × {c, 2c}; threads × {c, 4c, 16c, 32c} (c = usable cores, threads
      (one run each)    up to 64, fewer once more stop helping) × chunk sizes 1, 4, 16, …, one share (a walk
                        from ~4 chunks per worker, down then up while it improves); ProcessPoolExecutor /
                        ThreadPool .map, BLAS threads capped at c // workers; a run stops at 2 × the best so
                        far ──► the 3 fastest configurations (1 with --quick) are the oracle's finalists
    phase 1 rounds ── execute (cold: amorsize's pools shut down first; dry run and planning included),
      (`repeat`,        Pool() .map defaults (inside ``with``), joblib Parallel(n_jobs=-1) (cold: loky's
       order shuffled,  executor shut down), serial, and the finalists; oracle best = the lowest median
       a 0.1 s pause    of serial and the finalists; entries under 0.2 s get 9 rounds in all
       before each)
    phase 2 rounds ── after all workloads: execute with the machine corrected from the history of every
                        phase-1 execute run (core.calibration), execute forced to the oracle's best plan
                        (the runner's own cost, apart from the planner's choice), and that plan again

Regret = time / oracle best, within one phase. Amorsize's prediction error compares the plan's
predicted run time with the run's measured wall time (RunReport), before and after the history
correction (leave one workload out: the correction that predicts a workload never saw its runs).
Results go to stdout and to ``benchmarks/results_suite.md`` (``results_suite_partial.md`` for a
``--quick`` or ``--only`` run, which leaves the full report alone). The machine may be shared: the load
average is written next to the figures; compare ratios within one run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import math
import multiprocessing
import multiprocessing.pool
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from threadpoolctl import threadpool_limits

import amorsize.api
from amorsize.api import execute, execute_planned
from amorsize.core.calibration import (
    Correction,
    apply_correction,
    correct_prediction,
    estimate_correction,
    prediction_fields,
)
from amorsize.core.types import Candidate, Prediction
from amorsize.measure.machine import probe_machine, usable_cores
from amorsize.run.pools import shutdown_pools
from suite_workloads import Workload, workloads

#: A grid run is stopped at this multiple of the best time so far of its workload: it cannot be the
#: reference, and stopping bounds the oracle's cost (every run after serial is ≤ 2 × serial).
ORACLE_CUTOFF = 2.0
#: Oracle runs shorter than this are never stopped (start-up noise).
MIN_CUTOFF = 0.05
#: The oracle's fastest configurations measured again (full mode), for a median.
FINALISTS = 3

CONTENDERS = ("execute", "Pool", "joblib", "serial")


# -- timing ----------------------------------------------------------------------------------------


def _limit_blas(threads: int) -> None:
    threadpool_limits(threads)


def _serial(func: Callable[[Any], Any], data: Iterable[Any]) -> list[Any]:
    return [func(x) for x in data]


def _pool_defaults(func: Callable[[Any], Any], data: Iterable[Any]) -> list[Any]:
    with multiprocessing.Pool() as pool:
        return pool.map(func, data)


def _joblib_defaults(func: Callable[[Any], Any], data: Iterable[Any]) -> list[Any]:
    from joblib import Parallel, delayed
    from joblib.externals.loky import get_reusable_executor

    get_reusable_executor().shutdown(wait=True)  # cold, like the others: a script's first call
    return list(Parallel(n_jobs=-1)(delayed(func)(x) for x in data))


@dataclass
class AmorsizeRun:
    """One timed ``execute`` and what it planned."""

    seconds: float
    candidate: Candidate
    prediction: Prediction
    measured_run: float
    row: dict[str, Any]
    stream: bool = False  # input of unknown length: the plan assumed a length


def _amorsize(func: Callable[[Any], Any], data: Iterable[Any]) -> AmorsizeRun:
    stream = not hasattr(data, "__len__")
    shutdown_pools()
    started = time.perf_counter()
    _, report, result = execute_planned(func, data)
    seconds = time.perf_counter() - started
    assert result is not None and result.plan is not None
    plan = result.plan
    row = {
        "executor": report.executor,
        "n_jobs": report.n_workers,
        "chunksize": report.initial_chunksize,
        "n_items": report.n_items,
        "status": report.status,
        "predicted_seconds": report.predicted_seconds,
        "measured_seconds": report.wall_seconds,
        "busy_seconds": report.busy_seconds,
        "final_chunksize": report.final_chunksize,
        "items_from_dry_run": report.items_from_dry_run,
        **prediction_fields(
            plan.prediction,
            plan.serial,
            planned_items=None if stream else report.n_items - report.items_from_dry_run,
        ),
    }
    return AmorsizeRun(seconds, plan.candidate, plan.prediction, report.wall_seconds, row, stream)


def _time(run: Callable[[], Any]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def _grid_run(
    func: Callable[[Any], Any], data: list[Any], kind: str, n_jobs: int, chunksize: int, cutoff: float
) -> tuple[float, bool]:
    """One oracle configuration with the standard library, stopped at ``cutoff``: (seconds, stopped).

    Processes run on ``concurrent.futures.ProcessPoolExecutor`` (``multiprocessing.Pool.terminate``
    deadlocks when a worker is writing a large result: seen with 1 MB results), threads on
    ``multiprocessing.pool.ThreadPool`` (which has a chunk size). The clock stops at the last result,
    before the pool is shut down.
    """
    cores = usable_cores()
    blas = max(1, cores // n_jobs)
    timeout = None if math.isinf(cutoff) else cutoff
    started = time.perf_counter()
    if kind == "serial":
        for x in data:
            func(x)
            if time.perf_counter() - started > cutoff:
                return time.perf_counter() - started, True
        return time.perf_counter() - started, False
    if kind == "threads":
        with threadpool_limits(blas):
            pool = multiprocessing.pool.ThreadPool(n_jobs)
            try:
                result = pool.map_async(func, data, chunksize=chunksize)
                result.wait(timeout)
                seconds = time.perf_counter() - started
                if not result.ready():
                    return seconds, True
                result.get()
                return seconds, False
            finally:
                pool.terminate()
                pool.join()
    executor = ProcessPoolExecutor(n_jobs, initializer=_limit_blas, initargs=(blas,))
    stopped = False
    try:
        for _ in executor.map(func, data, chunksize=chunksize, timeout=timeout):
            pass
    except TimeoutError:
        stopped = True
    seconds = time.perf_counter() - started
    # not killed: a worker killed while writing a result leaves a partial message that hangs the
    # executor; chunks not started are cancelled, the running ones (at most ~2 per worker) finish
    executor.shutdown(wait=True, cancel_futures=True)
    return seconds, stopped


def _ladder(n_items: int, n_jobs: int) -> list[int]:
    share = max(1, -(-n_items // n_jobs))
    sizes = {share}
    size = 1
    while size < share:
        sizes.add(size)
        size *= 4
    return sorted(sizes)


@dataclass
class OracleResult:
    """The grid search: every configuration's first run, and the fastest few for the timed rounds."""

    runs: dict[tuple[str, int, int], float] = field(default_factory=dict)
    stopped: set[tuple[str, int, int]] = field(default_factory=set)
    finalists: list[tuple[str, int, int]] = field(default_factory=list)
    medians: dict[tuple[str, int, int], float] = field(default_factory=dict)

    @property
    def best(self) -> tuple[str, int, int]:
        return min(self.medians, key=lambda k: self.medians[k])

    @property
    def best_seconds(self) -> float:
        return self.medians[self.best]


def grid(func: Callable[[Any], Any], data: list[Any], serial_seconds: float, quick: bool) -> OracleResult:
    """Grid search over executor × workers × chunk size, one run each (see the module docstring)."""
    cores = usable_cores()
    n = len(data)
    serial = ("serial", 1, n)
    runs: dict[tuple[str, int, int], float] = {serial: serial_seconds}
    stopped: set[tuple[str, int, int]] = set()

    def best() -> float:
        return min(t for k, t in runs.items() if k not in stopped)

    def measure(config: tuple[str, int, int]) -> float:
        if config in runs:
            return math.inf if config in stopped else runs[config]
        cutoff = max(MIN_CUTOFF, ORACLE_CUTOFF * best())
        seconds, was_stopped = _grid_run(func, data, *config, cutoff=cutoff)
        runs[config] = seconds
        if was_stopped:
            stopped.add(config)
            return math.inf
        return seconds

    def walk(kind: str, n_jobs: int) -> float:
        """Chunk sizes from ~4 chunks per worker, down then up the ladder while they improve by 3 %."""
        ladder = _ladder(n, n_jobs)
        start = min(range(len(ladder)), key=lambda i: abs(ladder[i] - max(1, n // (4 * n_jobs))))
        found = measure((kind, n_jobs, ladder[start]))
        for step in (-1, 1):
            previous, i = measure((kind, n_jobs, ladder[start])), start + step
            while 0 <= i < len(ladder):
                seconds = measure((kind, n_jobs, ladder[i]))  # inf when stopped: never an improvement
                found = min(found, seconds)
                if not seconds < 0.97 * previous:
                    break
                previous, i = seconds, i + step
        return found

    for n_jobs in sorted({cores, 2 * cores}):
        if n_jobs <= n:
            walk("processes", n_jobs)
    previous = math.inf
    # up to 256 threads, as Amorsize may plan for waiting work (MAX_WAIT_THREADS), and at most one
    # per item; the walk stops once more threads stop helping, so work that computes stops early
    counts = sorted({min(64, c) for c in (cores, 4 * cores, 16 * cores, 32 * cores)} | {128, 256})
    thread_counts = sorted({min(n, c) for c in (counts if not quick else counts[::2])})
    for n_jobs in thread_counts:
        found = walk("threads", n_jobs)
        if math.isinf(found) or found > 1.1 * previous:  # more threads stopped helping
            break
        previous = min(previous, found)
    ranked = sorted((k for k in runs if k not in stopped and k != serial), key=lambda k: runs[k])
    return OracleResult(runs, stopped, ranked[: 1 if quick else FINALISTS])


# -- one workload ------------------------------------------------------------------------------------


@dataclass
class WorkloadResult:
    workload: Workload
    times: dict[str, list[float]]
    amorsize_runs: list[AmorsizeRun]
    oracle: OracleResult
    history_runs: list[AmorsizeRun] = field(default_factory=list)
    later: dict[str, list[float]] = field(default_factory=dict)
    load: str = ""

    def median(self, name: str) -> float:
        return statistics.median(self.times[name])

    def regret(self, name: str) -> float:
        return self.median(name) / self.oracle.best_seconds

    def later_regret(self, name: str) -> float:
        """Regret of a contender of the second phase, against the oracle plan timed in that phase."""
        return statistics.median(self.later[name]) / statistics.median(self.later["oracle"])


def _run_config(func: Callable[[Any], Any], data: Iterable[Any], config: tuple[str, int, int]) -> float:
    kind, n_jobs, chunksize = config
    if kind == "serial":
        return _time(lambda: _serial(func, data))
    return _grid_run(func, list(data), kind, n_jobs, chunksize, math.inf)[0]


def _rounds(
    func: Callable[[Any], Any],
    make_data: Callable[[], Iterable[Any]],
    timers: dict[str, Callable[[Iterable[Any]], float]],
    repeat: int,
) -> dict[str, list[float]]:
    """Time every entry of ``timers`` ``repeat`` times, in a new order each round; fresh data each time.

    Entries faster than :data:`SHORT_SECONDS` get more rounds (:data:`SHORT_ROUNDS` in all).

    The order is shuffled (seeded by the round), not rotated: rotating keeps every entry behind the
    same neighbour, and what a run inherits from its predecessor (a thread pool's 200 MB of freed
    results made any following run of large-output take ~0.58 s instead of ~0.45 s) then biases one
    contender in most rounds. Each timing starts after :func:`_settle`.
    """
    names = list(timers)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeat):
        order = list(names)
        random.Random(round_).shuffle(order)
        for name in order:
            data = make_data()
            _settle()
            times[name].append(timers[name](data))
    # Short timings swing most: more rounds for the entries whose median is under SHORT_SECONDS.
    short = [name for name in names if statistics.median(times[name]) < SHORT_SECONDS]
    for round_ in range(repeat, SHORT_ROUNDS if repeat > 1 else repeat):
        random.Random(round_).shuffle(short)
        for name in short:
            data = make_data()
            _settle()
            times[name].append(timers[name](data))
    return times


#: Timings whose median over the first rounds is under this many seconds get rounds up to
#: :data:`SHORT_ROUNDS` (not with ``--quick``): the same serial loop over 1M × x*x took 0.045 to
#: 0.085 s within one suite run, and a median of three then decided whether execute (+7 ms of
#: analysis) looked 0.9× or 1.6× of serial.
SHORT_SECONDS = 0.2
SHORT_ROUNDS = 9


#: Pause before each timed run of the rounds. Without it a run inherited its predecessor's state: on
#: 1M × x*x (~50 ms) the same code measured 0.052 s after joblib and 0.058 s after a thread pool
#: (four runs each), and the serial loop the other way round — as large as the effect measured.
SETTLE_SECONDS = 0.1


def _settle() -> None:
    """Collect garbage and pause (:data:`SETTLE_SECONDS`): every contender starts from the same state."""
    gc.collect()
    time.sleep(SETTLE_SECONDS)


def run_workload(workload: Workload, repeat: int, quick: bool) -> WorkloadResult:
    """Grid search first (one run per configuration), then rounds of contenders and oracle finalists."""
    func = workload.func
    _serial(func, list(workload.make_data())[:3])  # warm: imports, first-call costs
    serial_first = _time(lambda: _serial(func, workload.make_data()))
    oracle = grid(func, list(workload.make_data()), serial_first, quick)
    shutdown_pools()
    amorsize_runs: list[AmorsizeRun] = []

    def timed_execute(data: Iterable[Any]) -> float:
        run = _amorsize(func, data)
        amorsize_runs.append(run)
        return run.seconds

    timers: dict[str, Callable[[Iterable[Any]], float]] = {
        "execute": timed_execute,
        "Pool": lambda data: _time(lambda: _pool_defaults(func, data)),
        "joblib": lambda data: _time(lambda: _joblib_defaults(func, data)),
        "serial": lambda data: _time(lambda: _serial(func, data)),
    }
    for i, config in enumerate(oracle.finalists):
        timers[f"oracle{i}"] = lambda data, config=config: _run_config(func, data, config)
    times = _rounds(func, workload.make_data, timers, repeat)
    shutdown_pools()
    oracle.medians = {("serial", 1, _serial_n(oracle)): statistics.median(times["serial"])}
    for i, config in enumerate(oracle.finalists):
        oracle.medians[config] = statistics.median(times[f"oracle{i}"])
    return WorkloadResult(workload, times, amorsize_runs, oracle, load=f"{os.getloadavg()[0]:.1f}")


def _serial_n(oracle: OracleResult) -> int:
    return next(k[2] for k in oracle.runs if k[0] == "serial")


def run_with_history(result: WorkloadResult, correction: Correction, repeat: int) -> None:
    """Second phase: execute with the machine corrected by ``correction``, execute at the oracle's plan,
    and the oracle's plan itself, in rounds (their regrets compare within this phase)."""
    func, original = result.workload.func, amorsize.api.probe_machine
    kind, n_jobs, chunksize = best = result.oracle.best

    def corrected(**kwargs: Any) -> Any:
        return apply_correction(original(**kwargs), correction)

    def with_history(data: Iterable[Any]) -> float:
        amorsize.api.probe_machine = corrected  # what wiring the correction into api.analyse does
        try:
            run = _amorsize(func, data)
        finally:
            amorsize.api.probe_machine = original
        result.history_runs.append(run)
        return run.seconds

    def at_oracle(data: Iterable[Any]) -> float:
        shutdown_pools()
        if kind == "serial":
            return _time(lambda: execute(func, data, executor="serial"))
        blas = max(1, usable_cores() // n_jobs) if kind == "processes" else None  # as the oracle ran
        return _time(
            lambda: execute(func, data, executor=kind, n_jobs=n_jobs, chunksize=chunksize, blas_threads=blas)
        )

    timers: dict[str, Callable[[Iterable[Any]], float]] = {
        "execute+history": with_history,
        "execute@oracle": at_oracle,
        "oracle": lambda data: _run_config(func, data, best),
    }
    result.later = _rounds(func, result.workload.make_data, timers, repeat)
    shutdown_pools()


# -- report ------------------------------------------------------------------------------------------


def _geomean(values: Iterable[float]) -> float:
    logs = [math.log(v) for v in values if v > 0 and math.isfinite(v)]
    return math.exp(statistics.fmean(logs)) if logs else math.nan


def _config(config: tuple[str, int, int]) -> str:
    kind, n_jobs, chunksize = config
    return "serial" if kind == "serial" else f"{kind} × {n_jobs}, cs {chunksize}"


def _plan(candidate: Candidate) -> str:
    return _config((candidate.executor, candidate.n_jobs, candidate.chunksize))


def _error(predicted: float, measured: float) -> float | None:
    """Relative error of a prediction, or None when the run was empty (the dry run did everything)."""
    if measured < 1e-3 and predicted < 1e-3:
        return None
    return abs(predicted - measured) / max(measured, 1e-9)


def machine_text() -> str:
    machine = probe_machine()
    costs = machine.costs
    return (
        f"{platform.node()} · {platform.machine()} · {_cpu_model()} · {os.cpu_count()} logical / "
        f"{psutil.cpu_count(logical=False)} physical cores ({machine.usable_cores} usable) · "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB · Python {platform.python_version()} · "
        f"start method {machine.start_method} · calibrated costs: process start-up "
        f"{costs.process_startup * 1e3:.1f} ms, per chunk {costs.process_task_overhead * 1e6:.0f} µs, pipe "
        f"{costs.pipe_bandwidth / 1e6:.0f} MB/s, thread start-up {costs.thread_startup * 1e6:.0f} µs"
    )


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or "?"


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f}"


def report(
    results: list[WorkloadResult],
    correction: Correction,
    loo: dict[str, Correction],
    header: list[str],
    *,
    partial: bool = False,
) -> tuple[list[str], dict[str, Any]]:
    """The markdown report and the headline figures; ``partial``: a ``--quick`` or ``--only`` run."""
    lines = list(header)
    names = ["execute", "Pool", "joblib", "serial"]
    later = ["execute+history", "execute@oracle"]
    lines += [
        "",
        "## Regret: median time / oracle best (lower is better; 1.00 = as fast as the best grid point)",
        "",
        "Phase 1 (contenders and the oracle's finalists timed in the same rounds): execute, Pool, joblib, "
        "serial. Phase 2 (after every workload ran, in rounds with the oracle's best plan again): execute "
        "with the history correction, and execute forced to the oracle's plan. Load: the 1-minute load "
        "average when the workload's phase 1 ended (the machine has 2 cores and is shared).",
        "",
        "| workload | oracle best | execute | Pool defaults | joblib defaults | serial | execute / serial "
        "| execute+history | execute@oracle plan | load |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    regrets: dict[str, list[float]] = {name: [] for name in names + later}
    vs_serial: list[tuple[str, float]] = []
    for r in results:
        row = [r.workload.name, f"{_config(r.oracle.best)}: {r.oracle.best_seconds:.3f}s"]
        for name in names:
            regrets[name].append(r.regret(name))
            row.append(f"{r.regret(name):.2f}")
        ratio = r.median("execute") / r.median("serial")
        vs_serial.append((r.workload.name, ratio))
        row.append(f"{ratio:.2f}")
        for name in later:
            value = r.later_regret(name) if r.later else math.nan
            regrets[name].append(value)
            row.append(f"{value:.2f}")
        row.append(r.load)
        lines.append("| " + " | ".join(row) + " |")
    geo = {name: _geomean(values) for name, values in regrets.items()}
    worst = {name: max(values) for name, values in regrets.items()}
    lines.append(
        "| **geometric mean** | | "
        + " | ".join(f"**{geo[name]:.2f}**" for name in names)
        + f" | {_geomean(v for _, v in vs_serial):.2f} | "
        + " | ".join(f"**{geo[name]:.2f}**" for name in later)
        + " | |"
    )
    lines.append(
        "| **worst** | | "
        + " | ".join(f"{worst[name]:.2f}" for name in names)
        + f" | {max(v for _, v in vs_serial):.2f} | "
        + " | ".join(f"{worst[name]:.2f}" for name in later)
        + " | |"
    )

    lines += [
        "",
        "## Amorsize's plans and predictions (medians over repeats; the prediction is for the run after "
        "the dry run, compared with the run's measured wall time)",
        "",
        "| workload | plan (execute) | analysis | measured run | predicted run | error | after history "
        "(LOO) | error | + compute factor | error | plans with history |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    errors: dict[str, list[float]] = {"before": [], "after": [], "compute": []}
    for r in results:
        runs = r.amorsize_runs
        predicted = statistics.median(run.prediction.total for run in runs)
        measured = statistics.median(run.measured_run for run in runs)
        analysis = statistics.median(run.seconds - run.measured_run for run in runs)
        fix = loo[r.workload.name]
        after = statistics.median(correct_prediction(run.prediction, fix).total for run in runs)
        compute = statistics.median(
            correct_prediction(run.prediction, fix, compute=True).total for run in runs
        )
        stream = any(run.stream for run in runs)
        cells = []
        for key, value in (("before", predicted), ("after", after), ("compute", compute)):
            error = _error(value, measured)
            if error is not None and not stream:
                errors[key].append(error)
            shown = "n/a" if error is None else f"{error:.0%}"
            cells.append(f"{value:.3f}s | {shown}{' (stream)' if stream else ''}")
        plans = "; ".join(sorted({_plan(run.candidate) for run in runs}))
        history_plans = "; ".join(sorted({_plan(run.candidate) for run in r.history_runs}))
        lines.append(
            f"| {r.workload.name} | {plans} | {analysis:.3f}s | {measured:.3f}s | {cells[0]} | "
            f"{cells[1]} | {cells[2]} | {history_plans} |"
        )
    medians = {key: statistics.median(v) if v else math.nan for key, v in errors.items()}
    lines += [
        "",
        f"Median prediction error: **{medians['before']:.0%}** as planned, **{medians['after']:.0%}** with "
        f"the history correction of the machine costs (what `apply_correction` does), "
        f"**{medians['compute']:.0%}** if the compute slowdown factor were applied too (over "
        f"{len(errors['before'])} workloads; not counted: a run the dry run completed (n/a), and a "
        "stream, whose prediction is for an assumed 10,000 items). Corrections are leave-one-workload-out: "
        "the one applied to a workload was estimated from the other workloads' runs only.",
        "",
        f"History correction from all {correction.n_runs} execute runs of phase 1 (used by execute+history): "
        f"{correction}.",
        "",
        "## Targets",
        "",
    ]
    if partial:
        lines += [
            "A partial run (`--quick`: ¼ of the items and one round; or `--only`): the targets are judged "
            "on a full run of every workload. What this run measured against them:",
            "",
        ]
    worst_name, worst_ratio = max(vs_serial, key=lambda item: item[1])
    names_in_order = [r.workload.name for r in results]
    over = [name for name, value in zip(names_in_order, regrets["execute"], strict=True) if value > 1.5]
    targets = [
        ("geo-mean regret of execute ≤ 1.15", geo["execute"] <= 1.15, f"{geo['execute']:.2f}"),
        ("no workload above 1.5", not over, ", ".join(over) or "none above"),
        (
            "never slower than serial by > 10 %",
            worst_ratio <= 1.10,
            f"worst execute/serial {worst_ratio:.2f} ({worst_name})",
        ),
        ("median prediction error ≤ 20 %", medians["before"] <= 0.20, f"{medians['before']:.0%}"),
        (
            "better geo-mean than Pool and joblib",
            geo["execute"] < geo["Pool"] and geo["execute"] < geo["joblib"],
            f"{geo['execute']:.2f} vs Pool {geo['Pool']:.2f}, joblib {geo['joblib']:.2f}",
        ),
    ]
    for name, met, detail in targets:
        lines.append(f"- {'met' if met else '**missed**'}: {name} — {detail}")
    headline = {"geo": geo, "worst": worst, "errors": medians, "targets": targets}
    return lines, headline


def round_times(results: list[WorkloadResult]) -> list[str]:
    """Every timing of the rounds, in round order, so a median can be checked against its spread."""
    lines = ["", "## Timings of the rounds (seconds, round by round; phase 2 after the bar)", ""]
    for r in results:
        cells = [f"{name} {' '.join(f'{t:.3f}' for t in times)}" for name, times in r.times.items()]
        later = [f"{name} {' '.join(f'{t:.3f}' for t in times)}" for name, times in r.later.items()]
        tail = " | " + " · ".join(later) if later else ""
        lines.append(f"- **{r.workload.name}**: " + " · ".join(cells) + tail)
    return lines


def oracle_details(results: list[WorkloadResult]) -> list[str]:
    lines = ["", "## Oracle grids (seconds of the single grid run; › = stopped at the cutoff)", ""]
    for r in results:
        cells = [
            f"{_config(config)} {'›' if config in r.oracle.stopped else ''}{seconds:.3f}"
            for config, seconds in sorted(r.oracle.runs.items(), key=lambda item: item[1])
        ]
        finalists = ", ".join(
            f"{_config(config)} {r.oracle.medians[config]:.3f}s" for config in r.oracle.finalists
        )
        lines.append(f"- **{r.workload.name}** ({r.workload.description}; expect {r.workload.expect}).")
        lines.append(f"  Finalists (median of the rounds): {finalists}. Grid: " + " · ".join(cells))
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="¼ of the items, 1 repeat, a coarser oracle")
    parser.add_argument("--repeat", type=int, default=None, help="rounds of contenders (default 3; quick 1)")
    parser.add_argument("--only", default="", help="comma-separated workload names")
    parser.add_argument(
        "--out",
        default=None,
        help="report file (default: results_suite.md beside this script for a full run, "
        "results_suite_partial.md with --quick or --only, so a smoke run keeps the full report)",
    )
    args = parser.parse_args(argv)
    quick = bool(args.quick)
    partial = quick or bool(args.only)
    if args.out is None:
        name = "results_suite_partial.md" if partial else "results_suite.md"
        args.out = str(Path(__file__).with_name(name))
    repeat = args.repeat if args.repeat is not None else (1 if quick else 3)
    chosen = workloads(4 if quick else 1)
    if args.only:
        wanted = set(args.only.split(","))
        chosen = [w for w in chosen if w.name in wanted]
    command = "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    started = datetime.datetime.now()
    load_before = _load()
    header = [
        "# Amorsize benchmark suite",
        "",
        f"- machine: {machine_text()}",
        f"- command: `{command}` ({repeat} repeat{'s' if repeat != 1 else ''}, medians"
        + (f"; timings under {SHORT_SECONDS} s: {SHORT_ROUNDS} rounds)" if repeat > 1 else ")"),
        f"- started {started:%Y-%m-%d %H:%M}, load average (1, 5, 15 min) at start: {load_before}",
    ]
    print("\n".join(header), flush=True)
    results: list[WorkloadResult] = []
    for workload in chosen:
        began = time.perf_counter()
        result = run_workload(workload, repeat, quick)
        results.append(result)
        print(
            f"  {workload.name}: oracle {_config(result.oracle.best)} {result.oracle.best_seconds:.3f}s; "
            + ", ".join(f"{name} {result.median(name):.3f}s" for name in CONTENDERS)
            + f" [{time.perf_counter() - began:.0f}s, load {_load()}]",
            flush=True,
        )
    rows = [run.row for r in results for run in r.amorsize_runs]
    correction = estimate_correction(rows)
    loo = {
        r.workload.name: estimate_correction(
            [run.row for other in results if other is not r for run in other.amorsize_runs]
        )
        for r in results
    }
    print(f"  {correction}", flush=True)
    for result in results:
        run_with_history(result, correction, repeat)
    header.append(f"- finished {datetime.datetime.now():%H:%M}, load average at the end: {_load()}")
    lines, headline = report(results, correction, loo, header, partial=partial)
    lines += round_times(results) + oracle_details(results)
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text, encoding="utf-8")
    print(f"written to {args.out}; geo-mean regret execute {headline['geo']['execute']:.2f}")


if __name__ == "__main__":
    main()
