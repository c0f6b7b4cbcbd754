"""Find the fastest way to run a workload by measuring: a bounded search around the model's plan.

::

    data ──list()──► items
      │
      ├─► optimize(func, items, profile=True) ──► the model's plan (recommended), profile, machine
      ├─► candidates: serial; per executor kind a few worker counts around the cores and the plan;
      │   per count the model's best chunk size, ¼× and 4× it; each with its predicted time
      └─► measure, within time_budget                  (pools shut down first: every run is cold)
            0. the recommendation (always, whatever the budget)
            1. kinds:   the model's best candidate of serial, threads and processes
            2. workers: the other worker counts of the fastest kind (model's best chunk size each)
            3. chunks:  ¼× and 4× the chunk size of the fastest (kind, workers)
            4. the rest, in predicted order, keeping room for step 5
            5. the fastest FINALISTS again until each has REPEATS runs; the winner has the lowest median
          every run after the first is stopped once it takes CUTOFF × the best median so far (its
          time is then a lower bound) and none starts that would overrun the budget

Measurements are real runs of ``amorsize.imap`` with executor, n_jobs and chunksize forced (no dry
run), i.e. exactly what ``execute(func, data, **result.options())`` does later.

Example:
    >>> result = tune(abs, range(-2_000, 2_000), time_budget=2.0)
    >>> result.executor in ("serial", "threads", "processes")
    True
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amorsize.api import imap, optimize
from amorsize.core.model import blas_threads_per_worker, predict
from amorsize.core.planner import MAX_THREADS
from amorsize.core.types import Candidate, ExecutorKind, Machine, Profile
from amorsize.errors import ConfigurationError
from amorsize.measure.identity import function_name
from amorsize.results import OptimizationResult
from amorsize.run.pools import shutdown_pools

__all__ = ["CUTOFF", "REPEATS", "TuneResult", "TuneRow", "tune"]

#: A candidate is stopped once it has run this many times as long as the best time so far: it cannot
#: win by more than run-to-run noise (±10–20 % on a shared 2-core machine), and stopping early bounds
#: the cost of every measurement after the first by 1.5 × the best.
CUTOFF = 1.5

#: Runs of each of the fastest candidates; the winner is the one with the lowest median.
REPEATS = 3

#: How many of the fastest candidates are measured again.
FINALISTS = 3

#: Seconds of work per serial chunk: the serial candidate runs in chunks so that its cutoff is checked
#: (between chunks); the planner's default target chunk duration.
SERIAL_CHUNK_SECONDS = 0.2

#: Cutoffs never fall below this many seconds: shorter runs are dominated by pool start-up and timer
#: noise, and stopping them teaches nothing.
MIN_CUTOFF = 0.05


@dataclass(frozen=True)
class TuneRow:
    """One candidate and its measurements.

    Attributes:
        executor: ``"serial"``, ``"threads"`` or ``"processes"``.
        n_jobs: workers.
        chunksize: items per chunk at the start of the run.
        predicted_seconds: the model's prediction (all items, cold pools).
        seconds: measured wall times; empty when the budget ran out before this candidate.
        stopped: True when the run was stopped at the cutoff (``seconds`` is then a lower bound).
        recommended: True for the model's own plan.
    """

    executor: ExecutorKind
    n_jobs: int
    chunksize: int
    predicted_seconds: float
    seconds: tuple[float, ...] = ()
    stopped: bool = False
    recommended: bool = False

    @property
    def candidate(self) -> Candidate:
        """The candidate as the planner's type."""
        return Candidate(self.executor, self.n_jobs, self.chunksize)

    @property
    def median(self) -> float:
        """Median measured seconds (``inf`` when not measured or stopped at the cutoff)."""
        if not self.seconds or self.stopped:
            return math.inf
        return statistics.median(self.seconds)

    def __str__(self) -> str:
        label = str(self.candidate) + (" (recommended)" if self.recommended else "")
        if not self.seconds:
            measured = "not measured"
        elif self.stopped:
            measured = f"> {max(self.seconds):.4f}s (stopped)"
        else:
            measured = f"{self.median:.4f}s (×{len(self.seconds)})"
        return f"{label}: {measured}, predicted {self.predicted_seconds:.4f}s"


@dataclass(frozen=True, repr=False)
class TuneResult:
    """The best measured way to run, with everything measured on the way.

    Attributes:
        executor: the winner's executor kind.
        n_jobs: the winner's workers.
        chunksize: the winner's chunk size.
        best_seconds: the winner's median measured time.
        table: every candidate (measured or not), fastest first.
        recommended: the model's plan (from ``optimize``).
        recommended_seconds: its median measured time.
        blas_threads: BLAS/OpenMP threads per worker process the winner ran with (cores // workers,
            as a planned run uses); None for serial and threads.
        n_items: items in the workload.
        elapsed_seconds: time the tuning took, analysis included.
    """

    executor: ExecutorKind
    n_jobs: int
    chunksize: int
    best_seconds: float
    table: tuple[TuneRow, ...]
    recommended: OptimizationResult = field(compare=False)
    recommended_seconds: float
    blas_threads: int | None = None
    n_items: int = 0
    elapsed_seconds: float = 0.0

    @property
    def candidate(self) -> Candidate:
        """The winner as the planner's type."""
        return Candidate(self.executor, self.n_jobs, self.chunksize)

    @property
    def gain(self) -> float:
        """How much faster the winner ran than the recommendation (1.0: the model was right)."""
        return self.recommended_seconds / self.best_seconds if self.best_seconds > 0 else 1.0

    def options(self) -> dict[str, Any]:
        """Arguments that make ``execute``/``imap`` run the winner: ``execute(f, d, **r.options())``."""
        options: dict[str, Any] = {
            "executor": self.executor,
            "n_jobs": self.n_jobs,
            "chunksize": self.chunksize,
        }
        if self.blas_threads is not None:
            options["blas_threads"] = self.blas_threads
        return options

    @property
    def recommended_candidate(self) -> Candidate:
        """The model's plan as the planner's type."""
        plan = self.recommended
        return Candidate(plan.executor, plan.n_jobs, plan.chunksize)

    def __repr__(self) -> str:
        measured = sum(bool(row.seconds) for row in self.table)
        return (
            f"TuneResult(best={self.candidate!s}, best_seconds={self.best_seconds:.4g}, "
            f"recommended={self.recommended_candidate!s}, "
            f"recommended_seconds={self.recommended_seconds:.4g}, measured={measured})"
        )

    def __str__(self) -> str:
        lines = [
            f"Best: {self.candidate} — {self.best_seconds:.4f}s over {self.n_items} items",
            f"Model's plan: {self.recommended_candidate} — {self.recommended_seconds:.4f}s "
            f"({self.gain:.2f}× the best)",
            f"Tuning took {self.elapsed_seconds:.1f}s; measured candidates (cold pools):",
        ]
        lines += [f"  {row}" for row in self.table if row.seconds]
        skipped = sum(1 for row in self.table if not row.seconds)
        if skipped:
            lines.append(f"  ({skipped} more not measured: time budget)")
        return "\n".join(lines)


def _check_budget(time_budget: Any) -> float:
    if (
        isinstance(time_budget, bool)
        or not isinstance(time_budget, (int, float))
        or not math.isfinite(time_budget)
        or time_budget <= 0
    ):
        raise ConfigurationError(
            f"time_budget must be a positive number of seconds, e.g. 10 (got {time_budget!r})"
        )
    return float(time_budget)


def _powers_between(low: int, high: int) -> list[int]:
    """``low``, ``2·low``, ``4·low``, … up to ``high`` (both included)."""
    values = {high}
    value = max(1, low)
    while value < high:
        values.add(value)
        value *= 2
    return sorted(values)


def _best_chunk(
    profile: Profile, machine: Machine, kind: ExecutorKind, n_jobs: int, n: int
) -> tuple[int, float]:
    """The model's best chunk size (powers of two and one chunk per worker) for ``n_jobs`` workers."""
    share = max(1, -(-n // n_jobs))
    best = (share, predict(profile, machine, Candidate(kind, n_jobs, share), n).total)
    for size in _powers_between(1, share):
        total = predict(profile, machine, Candidate(kind, n_jobs, size), n).total
        if total < best[1]:
            best = (size, total)
    return best


def _serial(profile: Profile, n: int, target: float) -> Candidate:
    """Serial, in chunks of about ``target`` seconds: the cutoff is checked between chunks."""
    d = profile.mean_duration
    size = n if d <= 0 else int(min(float(n), max(1.0, target / d)))
    return Candidate("serial", 1, max(1, size))


def _recommended(plan: OptimizationResult, profile: Profile, n: int, target: float) -> Candidate:
    """The model's plan as a candidate."""
    if plan.executor == "serial":
        return _serial(profile, n, target)
    return Candidate(plan.executor, plan.n_jobs, plan.chunksize)


def _search_space(
    profile: Profile, machine: Machine, plan: OptimizationResult, n: int, options: dict[str, Any]
) -> dict[tuple[ExecutorKind, int], list[Candidate]]:
    """Per (kind, workers), the candidates to try, the model's best chunk size first."""
    usable = max(1, machine.usable_cores)
    forced_kind = options.get("executor")
    kinds: list[ExecutorKind] = ["threads", "processes"] if profile.picklable else ["threads"]
    if forced_kind is not None:
        kinds = [k for k in kinds if k == forced_kind]
    space: dict[tuple[ExecutorKind, int], list[Candidate]] = {}
    target = float(options.get("target_chunk_duration", SERIAL_CHUNK_SECONDS))
    if forced_kind in (None, "serial"):
        space[("serial", 1)] = [_serial(profile, n, target)]
    max_workers = options.get("max_workers")
    for kind in kinds:
        if kind == "processes":
            # all the cores, and half of them (memory bandwidth, hyper-threads); never one worker
            # beside serial (on two cores "half" is one: a trial spent on serial plus pickling)
            counts = {usable} | ({usable // 2} if usable // 2 >= 2 else set())
        else:
            top = max(4 * usable, 2 * plan.n_jobs) if plan.executor == "threads" else 2 * usable
            if profile.is_io_bound:
                top = max(top, MAX_THREADS)
            counts = set(_powers_between(usable, min(top, MAX_THREADS)))
        if plan.executor == kind:
            counts.add(plan.n_jobs)
        if options.get("n_jobs") is not None:
            counts = {options["n_jobs"]}
        if max_workers is not None:
            counts = {min(c, max_workers) for c in counts}
        for n_jobs in sorted(c for c in counts if c <= n):
            best, _ = _best_chunk(profile, machine, kind, n_jobs, n)
            share = max(1, -(-n // n_jobs))
            sizes = [best, max(1, best // 4), min(share, best * 4)]
            if options.get("chunksize") is not None:
                sizes = [min(options["chunksize"], share)]
            space[(kind, n_jobs)] = list(dict.fromkeys(Candidate(kind, n_jobs, size) for size in sizes))
    recommended = _recommended(plan, profile, n, target)
    group = space.setdefault((recommended.executor, recommended.n_jobs), [])
    if recommended not in group:
        group.append(recommended)
    return space


def _measure(
    func: Callable[[Any], Any],
    items: list[Any],
    candidate: Candidate,
    cutoff: float,
    blas_threads: int | None,
    start_method: str | None,
) -> tuple[float, bool]:
    """Seconds of one cold run of ``candidate``, and whether it was stopped at ``cutoff``."""
    shutdown_pools()
    started = time.perf_counter()
    results = imap(
        func,
        items,
        executor=candidate.executor,
        n_jobs=candidate.n_jobs,
        chunksize=candidate.chunksize,
        blas_threads=blas_threads if candidate.executor == "processes" else None,
        start_method=start_method,
    )
    try:
        for _ in results:
            if time.perf_counter() - started > cutoff:
                return time.perf_counter() - started, True
    finally:
        close = getattr(results, "close", None)  # a generator: closing stops the workers' work
        if close is not None:
            close()
    return time.perf_counter() - started, False


def _save(
    path: str | Path, result: TuneResult, func: Callable[[Any], Any], machine: Machine, target: float
) -> None:
    """Write the winner as an Amorsize config (:func:`amorsize.config.save_config`)."""
    from amorsize.config import save_config

    measured = ", ".join(
        f"{row.candidate} {row.median:.4g}s" for row in result.table if row.seconds and not row.stopped
    )
    save_config(
        result,
        path,
        function_name=function_name(func),
        target_chunk_duration=target,
        machine=machine,
        comment=f"amorsize.tune over {result.n_items} items; measured: {measured}",
    )


def tune(
    func: Callable[[Any], Any],
    data: Iterable[Any],
    *,
    time_budget: float = 10.0,
    verbose: bool = False,
    save_config: str | Path | None = None,
    **optimize_options: Any,
) -> TuneResult:
    """Measure a bounded set of ways to run ``func`` over ``data`` and return the fastest.

    The model's recommendation is the starting point (and is always measured); around it serial, a
    few worker counts of threads and processes, and for each the model's best chunk size, a quarter
    and four times it. Every run is cold (worker pools are shut down before each, so pools of this
    process are closed) and runs ``func`` over every item, so give ``tune`` a representative input
    that takes a few seconds at most. The result's :meth:`TuneResult.options` reproduce the winner.

    ``data`` is materialised into a list (it is run many times; a generator could be consumed once).

    Args:
        func: a one-argument function.
        data: any iterable.
        time_budget: seconds the whole search may take (analysis included); candidates that would
            overrun it are left unmeasured. At least the recommendation is measured once.
        verbose: print each measurement to stderr.
        save_config: a path: write the winner there as an Amorsize config
            (:func:`amorsize.config.save_config`; ``amorsize.load_config`` reads it back).
        **optimize_options: passed to :func:`~amorsize.api.optimize` (``sample_size``,
            ``target_chunk_duration``, ``max_workers``, ``min_speedup``, ``start_method``); a forced
            ``executor``, ``n_jobs`` or ``chunksize`` also restricts the search to it.

    Returns:
        A :class:`TuneResult`.

    Raises:
        ConfigurationError: ``data`` is empty, ``time_budget`` is not a positive number, a bad option,
            or the config cannot be written.
        SamplingError, ItemError: ``func`` raised (as from ``optimize`` and ``execute``).
    """
    budget = _check_budget(time_budget)
    began = time.perf_counter()
    items = list(data)
    if not items:
        raise ConfigurationError("data is empty: there is nothing to tune (pass at least one item)")
    n = len(items)
    plan = optimize(func, items, profile=True, **optimize_options)
    assert plan.profile is not None  # profile=True
    profile, machine = plan.profile.profile, plan.profile.machine
    start_method = optimize_options.get("start_method")

    space = _search_space(profile, machine, plan, n, optimize_options)
    candidates = [c for group in space.values() for c in group]
    predicted = {c: predict(profile, machine, c, n).total for c in candidates}
    recommended = _recommended(
        plan, profile, n, float(optimize_options.get("target_chunk_duration", SERIAL_CHUNK_SECONDS))
    )
    times: dict[Candidate, list[float]] = {c: [] for c in candidates}
    stopped: set[Candidate] = set()

    def left() -> float:
        return budget - (time.perf_counter() - began)

    def run(candidate: Candidate, cutoff: float) -> None:
        # as a planned run would: process workers get cores // workers BLAS threads each
        workers_blas = blas_threads_per_worker(machine, candidate.n_jobs)
        seconds, was_stopped = _measure(func, items, candidate, cutoff, workers_blas, start_method)
        if was_stopped and not times[candidate]:
            stopped.add(candidate)  # no complete run: its time is only a lower bound
        times[candidate].append(seconds)
        if verbose:
            state = " (stopped)" if was_stopped else ""
            print(
                f"amorsize tune: {candidate}: {seconds:.4f}s{state} (predicted {predicted[candidate]:.4f}s)",
                file=sys.stderr,
            )

    def ranking() -> list[Candidate]:
        done = [c for c, t in times.items() if t and c not in stopped]
        return sorted(done, key=lambda c: statistics.median(times[c]))

    def try_once(candidate: Candidate, reserve: float = 0.0) -> None:
        if times[candidate]:
            return
        done = ranking()
        cutoff = max(MIN_CUTOFF, CUTOFF * statistics.median(times[done[0]])) if done else math.inf
        available = left() - reserve
        if min(cutoff, predicted[candidate]) <= available:
            run(candidate, min(cutoff, max(MIN_CUTOFF, available)))

    def model_best(group: list[Candidate]) -> Candidate:
        return min(group, key=lambda c: predicted[c])

    run(recommended, math.inf)
    # 1. kinds: the model's best candidate of each executor kind
    by_kind: dict[str, list[Candidate]] = {}
    for (kind, _), group in space.items():
        by_kind.setdefault(kind, []).append(model_best(group))
    for kind_best in sorted((model_best(group) for group in by_kind.values()), key=lambda c: predicted[c]):
        try_once(kind_best)
    # 2. workers: the other worker counts of the fastest kind, at the model's best chunk size
    if ranking():
        kind = ranking()[0].executor
        for key in sorted((k for k in space if k[0] == kind), key=lambda k: predicted[model_best(space[k])]):
            try_once(model_best(space[key]))
    # 3. chunk sizes around the fastest (kind, workers)
    if ranking():
        fastest = ranking()[0]
        for candidate in space[(fastest.executor, fastest.n_jobs)]:
            try_once(candidate)
    # 4. whatever budget is left after keeping room for step 5: the rest, in predicted order
    for candidate in sorted(candidates, key=lambda c: predicted[c]):
        finalists = ranking()[:FINALISTS]
        try_once(candidate, reserve=sum(statistics.median(times[c]) for c in finalists) * (REPEATS - 1))
    # 5. the fastest few again until each has REPEATS runs: the winner is the lowest median
    while left() > 0:
        todo = [c for c in ranking()[:FINALISTS] if len(times[c]) < REPEATS]
        if not todo:
            break
        candidate = todo[0]
        if statistics.median(times[candidate]) > left():
            break
        run(candidate, max(MIN_CUTOFF, 2 * statistics.median(times[candidate])))
    shutdown_pools()

    rows = tuple(
        sorted(
            (
                TuneRow(
                    c.executor,
                    c.n_jobs,
                    c.chunksize,
                    predicted[c],
                    tuple(times[c]),
                    c in stopped,
                    c == recommended,
                )
                for c in candidates
            ),
            key=lambda row: (row.median, math.inf if row.seconds else 0.0, row.predicted_seconds),
        )
    )
    winner = rows[0]
    if not math.isfinite(winner.median):  # only the recommendation ran and it… cannot be stopped
        winner = next(row for row in rows if row.recommended)
    recommended_row = next(row for row in rows if row.recommended)
    result = TuneResult(
        executor=winner.executor,
        n_jobs=winner.n_jobs,
        chunksize=winner.chunksize,
        best_seconds=winner.median if winner.seconds else math.inf,
        table=rows,
        recommended=plan,
        recommended_seconds=statistics.median(recommended_row.seconds),
        blas_threads=blas_threads_per_worker(machine, winner.n_jobs)
        if winner.executor == "processes"
        else None,
        n_items=n,
        elapsed_seconds=time.perf_counter() - began,
    )
    if verbose:
        print(result, file=sys.stderr)
    if save_config is not None:
        _save(
            save_config,
            result,
            func,
            machine,
            float(optimize_options.get("target_chunk_duration", SERIAL_CHUNK_SECONDS)),
        )
    return result
