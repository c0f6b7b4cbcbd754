"""The planner: search ways to run with the cost model and return the cheapest as a :class:`Plan`.

Pure: no clock, no I/O. The search, for each executor kind allowed (serial always; threads; processes
only when the function and items pickle; Dask only when asked for)::

    worker counts  1‥8, then ×√2 steps, plus the physical and usable core counts, up to the kind's bound
      └─ for each: chunk sizes 1, 2, 4, … up to the largest allowed, plus the sizes that give every
         worker the same number of chunks ──► model.predict_parts ──► best chunk size per count
    refine: every count between the best count's grid neighbours (at most 8 of them)
    pick:   the cheapest; a candidate with more workers must be WORKER_ECONOMY cheaper to win, and
            threads must beat processes even with the probe's uncertainty added to their serial part
    gate:   parallel only if speedup ≥ min_speedup and the saving ≥ NOISE_FLOOR, else serial

Given a Dask cluster's machine (``plan(..., cluster=...)``, built by
:func:`amorsize.measure.cluster.cluster_machine`), the parallel kind is Dask alone, searched on the
cluster's machine (its worker threads, measured per-task cost and bandwidth, no start-up) against
serial here, with the same gate: a run too small to pay for the cluster's per-task cost stays serial.

Bounds: processes up to the usable cores and the memory ceiling; threads up to :data:`MAX_THREADS`
(or :data:`THREADS_PER_CORE` × usable cores), :data:`MAX_WAIT_THREADS` for waiting work, and the
threads' memory ceiling; both up to ``max_workers`` and the number of items. Chunks never exceed
one worker's share, ``ceil(n / n_jobs)``, nor the count that lasts ``target_chunk_duration``, shrunk
for uneven items by the seed's rule ``× max(0.25, 1 − 0.5 × CV)``.

Example:
    >>> from amorsize.core.types import Machine, MachineCosts, PlanOptions, Profile
    >>> cpu_bound = Profile(durations=(0.01,) * 8, cpu_times=(0.01,) * 8, input_bytes=(100,) * 8,
    ...                     output_bytes=(100,) * 8, serialize_seconds=(1e-5,) * 8, thread_speedup=1.0)
    >>> machine = Machine(4, 4, 4, 2**33, None, "fork", False, MachineCosts.fallback("fork"))
    >>> plan(cpu_bound, machine, PlanOptions(n_items=10_000)).candidate
    Candidate(executor='processes', n_jobs=4, chunksize=20)
    >>> plan(cpu_bound, machine, PlanOptions(n_items=5)).candidate.executor
    'serial'
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from amorsize.core.model import (
    DASK_BLAS_THREADS,
    PROBE_NOISE,
    WORKER_BASE_MEMORY,
    Workload,
    blas_threads_per_worker,
    chunk_costs,
    compute_bounds,
    item_wall_in_worker,
    memory_ceiling,
    predict_parts,
    transfer_on_cores,
)
from amorsize.core.types import (
    EXECUTOR_KINDS,
    HETEROGENEOUS_CV,
    IO_BOUND_CPU_RATIO,
    MAX_WAIT_THREADS,
    Candidate,
    ExecutorKind,
    Machine,
    Plan,
    PlanOptions,
    Prediction,
    Profile,
)
from amorsize.errors import ConfigurationError

__all__ = [
    "MAX_THREADS",
    "MAX_WAIT_THREADS",
    "NOISE_FLOOR",
    "THREADS_PER_CORE",
    "WORKER_ECONOMY",
    "plan",
]

#: A parallel plan must save at least this many seconds over serial, or the gain is within run-to-run
#: noise. Measured on this project's 2-core Linux machine (CPython 3.11): starting a 2-worker
#: ProcessPoolExecutor and mapping 4 trivial items took 7 ms with fork and 88 ms with spawn, standard
#: deviations 2 ms and 12 ms over 15 runs; 20 ms sits above that spread.
NOISE_FLOOR = 0.020

#: A candidate with more workers must be predicted at least this much faster (relative) than the best
#: one with fewer, or the fewer win: the model's resolution is no finer, and workers cost memory and
#: cores that other programs could use.
WORKER_ECONOMY = 0.03

#: Thread counts are searched up to max(MAX_THREADS, THREADS_PER_CORE × usable cores): enough to hide
#: 50 ms waits behind 1 ms of CPU work on a small machine (50 threads); the CPU and serialised-part
#: bounds of the model stop the search well before this for work that computes.
MAX_THREADS = 64
THREADS_PER_CORE = 8

#: Worker counts up to this are all tried; beyond it, steps of ×√2 then a local refinement.
_LINEAR_WORKERS = 8
#: At most this many counts are tried between the best count's neighbours in the refinement.
_REFINE_POINTS = 8
#: A parallel plan whose compute alone is at least this fraction of the serial time barely parallelises:
#: the serial reason then names what serialises the work rather than an overhead.
_BARELY_PARALLEL = 0.8
#: Chunk sizes within this fraction of the cheapest count as tied; the largest of them is taken.
_CHUNK_TIE = 0.005

_PARTS = ("startup", "dispatch", "transfer", "compute", "imbalance")
_OVERHEAD_NAMES = {
    "startup": "worker start-up",
    "dispatch": "per-chunk dispatch",
    "transfer": "pickling and transfer",
    "imbalance": "the uneven end of the run",
    "compute": "the work itself",
}


@dataclass(frozen=True)
class _Point:
    """The best chunk size found for one (executor, worker count)."""

    total: float
    candidate: Candidate
    parts: tuple[float, float, float, float, float]

    def prediction(self) -> Prediction:
        return Prediction(self.candidate, *self.parts)


@dataclass(frozen=True)
class _KindResult:
    """What the search found for one executor kind."""

    kind: ExecutorKind
    points: dict[int, _Point]
    bound: int
    bound_by: str

    def best(self, acceptable: Callable[[_Point], bool] = lambda p: True) -> _Point:
        return _pick(self.points.values(), acceptable)


def _pick(points: Iterable[_Point], acceptable: Callable[[_Point], bool] = lambda p: True) -> _Point:
    """The cheapest point; one with more workers wins only if it is WORKER_ECONOMY cheaper.

    Fewer workers are preferred only among ``acceptable`` points (those that pass the serial gate), so
    economy never turns a plan that is worth running in parallel into one that is not.
    """
    pts = list(points)
    cheapest = min(pts, key=lambda p: p.total)
    good = [p for p in pts if p.total <= cheapest.total * (1.0 + WORKER_ECONOMY) and acceptable(p)]
    if not good:
        return cheapest
    return min(good, key=lambda p: (p.candidate.n_jobs, p.total, -p.candidate.chunksize))


def _validate(options: PlanOptions) -> None:
    if options.executor is not None and options.executor not in EXECUTOR_KINDS:
        raise ConfigurationError(
            f"executor must be one of {', '.join(map(repr, EXECUTOR_KINDS))} or None "
            f"(got {options.executor!r})"
        )
    if options.n_items is not None and options.n_items < 0:
        raise ConfigurationError(f"n_items must be >= 0 or None (got {options.n_items})")
    if options.n_jobs is not None and options.n_jobs < 1:
        raise ConfigurationError(f"n_jobs must be >= 1 or None to choose (got {options.n_jobs})")
    if options.chunksize is not None and options.chunksize < 1:
        raise ConfigurationError(f"chunksize must be >= 1 or None to choose (got {options.chunksize})")
    if options.max_workers is not None and options.max_workers < 1:
        raise ConfigurationError(f"max_workers must be >= 1 or None (got {options.max_workers})")
    if not (math.isfinite(options.target_chunk_duration) and options.target_chunk_duration > 0):
        raise ConfigurationError(
            "target_chunk_duration must be a positive number of seconds "
            f"(got {options.target_chunk_duration})"
        )
    if not (math.isfinite(options.min_speedup) and options.min_speedup > 0):
        raise ConfigurationError(
            f"min_speedup must be a positive number, e.g. 1.2 (got {options.min_speedup})"
        )
    if options.assumed_stream_items < 0:
        raise ConfigurationError(f"assumed_stream_items must be >= 0 (got {options.assumed_stream_items})")
    if (
        options.n_jobs is not None
        and options.max_workers is not None
        and options.n_jobs > options.max_workers
    ):
        raise ConfigurationError(
            f"n_jobs={options.n_jobs} is more than max_workers={options.max_workers}; "
            "pass one or the other, or raise max_workers"
        )
    for kind, count in options.warm_workers.items():
        if count < 0:
            raise ConfigurationError(f"warm_workers[{kind!r}] must be >= 0 (got {count})")


def _fmt_time(seconds: float) -> str:
    """``850 µs``, ``3.2 ms``, ``41 ms``, ``2.5 s``, ``3.1 min``."""
    if not math.isfinite(seconds):
        return "∞"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 10e-3:
        return f"{seconds * 1e3:.1f} ms"
    if seconds < 1.0:
        return f"{seconds * 1e3:.0f} ms"
    if seconds < 120.0:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


def _fmt_bytes(n: float) -> str:
    if n >= 2**30:
        return f"{n / 2**30:.1f} GiB"
    return f"{n / 2**20:.0f} MiB"


def _speedup(serial: float, total: float) -> float:
    if total <= 0:
        return math.inf if serial > 0 else 1.0
    return serial / total


def _worker_grid(upper: int, anchors: Iterable[int]) -> list[int]:
    """1‥8, then ×√2 steps up to ``upper``, plus ``upper`` and the anchors within range."""
    grid = set(range(1, min(upper, _LINEAR_WORKERS) + 1))
    x = float(_LINEAR_WORKERS)
    while x < upper:
        x *= math.sqrt(2.0)
        grid.add(min(upper, round(x)))
    grid.add(upper)
    grid.update(a for a in anchors if 1 <= a <= upper)
    return sorted(grid)


def _chunk_grid(n: int, n_jobs: int, item_seconds: float, cv: float, target: float) -> list[int]:
    """Chunk sizes to try for ``n_jobs`` workers (see the module docstring)."""
    share = max(1, -(-n // n_jobs))
    upper = share
    if item_seconds > 0:
        by_target = max(1.0, target / item_seconds) * max(0.25, 1.0 - 0.5 * cv)
        upper = max(1, int(min(float(share), by_target)))
    grid = {upper}
    size = 1
    while size < upper:
        grid.add(size)
        size *= 2
    # sizes that give every worker the same number of chunks: k rounds, near the top and small k
    top_rounds = max(1, -(-n // (n_jobs * upper)))
    for rounds in (1, 2, 3, 4, top_rounds, top_rounds + 1):
        size = -(-n // (rounds * n_jobs))
        if size <= upper:
            grid.add(size)
    return sorted(grid)


class _Search:
    """Evaluates candidates for one planning call."""

    def __init__(self, workload: Workload, machine: Machine, options: PlanOptions, n: int) -> None:
        self.workload = workload
        self.machine = machine
        self.options = options
        self.n = n

    def point(self, kind: ExecutorKind, n_jobs: int) -> _Point:
        """The best chunk size for ``n_jobs`` workers of ``kind``."""
        w, machine, n = self.workload, self.machine, self.n
        warm = self.options.warm_workers.get(kind, 0)
        if self.options.chunksize is not None:
            sizes = [self.options.chunksize]
        else:
            item = item_wall_in_worker(w, machine, kind, n_jobs)
            sizes = _chunk_grid(n, n_jobs, item, w.cv, self.options.target_chunk_duration)
        evaluated: list[tuple[float, int, tuple[float, float, float, float, float]]] = []
        costs = chunk_costs(w, machine, kind, n_jobs, n, warm)
        for size in sizes:
            parts = costs(size)
            evaluated.append((parts[0] + parts[1] + parts[2] + parts[3] + parts[4], size, parts))
        cheapest = min(e[0] for e in evaluated)
        # near-ties go to the largest chunk: fewer chunks are more robust to per-chunk costs
        tied = [e for e in evaluated if e[0] <= cheapest * (1.0 + _CHUNK_TIE)]
        total, size, parts = max(tied, key=lambda e: e[1])
        return _Point(total, Candidate(kind, n_jobs, size), parts)

    def search(self, kind: ExecutorKind, bound: int, bound_by: str, anchors: Iterable[int]) -> _KindResult:
        """Best point per worker count of ``kind`` up to ``bound``, refined around the best."""
        forced = self.options.n_jobs
        counts = [forced] if forced is not None else _worker_grid(bound, anchors)
        if forced is None and bound > 1:
            # one worker runs the items one after another like serial, plus the backend's costs: it
            # can only win through the model's noise (it once planned threads × 1 for NumPy work)
            counts = [count for count in counts if count > 1]
        points = {count: self.point(kind, count) for count in counts}
        if self.options.n_jobs is None and len(counts) > 1:
            best = _pick(points.values()).candidate.n_jobs
            i = counts.index(best)
            lo = counts[i - 1] if i > 0 else best
            hi = counts[i + 1] if i + 1 < len(counts) else best
            inner = list(range(lo + 1, hi))
            if len(inner) > _REFINE_POINTS:
                step = len(inner) / _REFINE_POINTS
                inner = sorted({inner[int(j * step)] for j in range(_REFINE_POINTS)})
            for count in inner:
                points[count] = self.point(kind, count)
        return _KindResult(kind, points, bound, bound_by)


def _serial_chunksize(w: Workload, options: PlanOptions, n: int) -> int:
    """The chunk size a serial run reports (progress and checkpoints): about one target duration."""
    if options.chunksize is not None:
        return options.chunksize
    if w.mean_duration <= 0:
        return max(1, n)
    return max(1, int(min(float(n), options.target_chunk_duration / w.mean_duration)))


_KIND_WORKERS = {"threads": "thread", "processes": "process", "dask": "Dask"}
_PROCESS_KINDS = ("processes", "dask")


def plan(profile: Profile, machine: Machine, options: PlanOptions, *, cluster: Machine | None = None) -> Plan:
    """Search ways to run ``profile``'s function on ``machine`` and return the cheapest, with reasons.

    Args:
        profile: the dry run's measurements.
        machine: the machine.
        options: the user's knobs (forced executor, worker count or chunk size, bounds, thresholds).
        cluster: a Dask cluster as a machine (see the module docstring); then the plan is serial
            (here) or Dask (there), and ``options.executor`` may only be None, ``"serial"`` or ``"dask"``.

    Returns:
        The plan: the chosen candidate and its prediction, the serial prediction, the best alternatives
        (cheapest first), 1–3 reasons and any warnings.

    Raises:
        ConfigurationError: an option is out of range, or ``executor="processes"`` (or ``"dask"``) was
            forced for a function or items that cannot be pickled, or a local parallel executor was
            forced together with a ``cluster``.

    Example:
        >>> from amorsize.core.types import Machine, MachineCosts, PlanOptions, Profile
        >>> waits = Profile(durations=(0.05,) * 4, cpu_times=(0.001,) * 4, input_bytes=(50,) * 4,
        ...                 output_bytes=(5000,) * 4, serialize_seconds=(2e-5,) * 4, thread_speedup=1.98)
        >>> machine = Machine(4, 4, 4, 2**33, None, "fork", False, MachineCosts.fallback("fork"))
        >>> chosen = plan(waits, machine, PlanOptions(n_items=2000))
        >>> chosen.candidate.executor, chosen.candidate.n_jobs > machine.usable_cores
        ('threads', True)
    """
    _validate(options)
    if cluster is not None and options.executor in ("threads", "processes"):
        raise ConfigurationError(
            f"executor={options.executor!r} cannot run on a Dask cluster; with a cluster pass "
            "executor='dask', 'serial' or None (to choose between them)"
        )
    w = Workload.from_profile(profile, free_threaded=machine.free_threaded or profile.free_threaded)
    stream = options.n_items is None
    n = options.assumed_stream_items if options.n_items is None else options.n_items
    serial_candidate = Candidate("serial", 1, _serial_chunksize(w, options, n))
    serial = Prediction(serial_candidate, *predict_parts(w, machine, "serial", 1, 1, n))
    assumed = f" for an assumed {n:,} items (input length unknown)" if stream else ""
    warnings: list[str] = []

    def serial_plan(reason: str, alternatives: tuple[Prediction, ...] = ()) -> Plan:
        if stream:
            reason = f"{reason} Planned{assumed}."
        return Plan(serial_candidate, serial, serial, alternatives, (reason,), tuple(warnings))

    if options.executor == "serial":
        return serial_plan("Serial was requested.")
    if options.executor is None and options.n_jobs == 1:
        return serial_plan("n_jobs=1 was requested; serial.")
    if n == 0:
        return serial_plan("No items to run; serial.")

    # Parallel candidates run on the cluster when there is one; serial always runs here.
    parallel = machine if cluster is None else cluster
    kinds: list[ExecutorKind] | None = ["dask"] if cluster is not None else None
    results = _search_kinds(_Search(w, parallel, options, n), profile, warnings, kinds)
    if not results:
        return serial_plan("No parallel executor was possible; serial.")

    forced_parallel = options.executor is not None or (options.n_jobs is not None and options.n_jobs > 1)

    def worth_it(point: _Point) -> bool:
        """The serial gate: enough speedup and enough time saved (always, when parallel was forced)."""
        speedup = _speedup(serial.total, point.total)
        return forced_parallel or (
            speedup >= options.min_speedup and serial.total - point.total >= NOISE_FLOOR
        )

    best_by_kind = {kind: result.best(worth_it) for kind, result in results.items()}
    doubtful = _Search(_doubting_the_probe(w, profile), parallel, options, n)
    chosen = _choose_kind(best_by_kind, doubtful, worth_it)
    prediction = chosen.prediction()
    speedup = _speedup(serial.total, chosen.total)
    go_parallel = worth_it(chosen)
    warnings += _limit_warnings(results, best_by_kind, chosen if go_parallel else None, w, parallel, options)

    if not go_parallel:
        alternatives = tuple(sorted((p.prediction() for p in best_by_kind.values()), key=lambda p: p.total))
        fastest = min(best_by_kind.values(), key=lambda p: p.total)
        reason = _serial_reason(w, profile, fastest, serial, parallel, options)
        return serial_plan(reason, alternatives)

    if speedup < 1.0:
        warnings.append(
            f"The requested {chosen.candidate} is predicted slower than serial ({speedup:.2f}×): "
            f"{_dominant_overhead(prediction)} costs {_fmt_time(_largest_overhead(prediction))}."
        )
    # alternatives: serial, the other kinds' best, and the neighbouring worker counts of the chosen kind
    kind = chosen.candidate.executor
    others = [serial] + [p.prediction() for k, p in best_by_kind.items() if k != kind]
    counts = sorted(results[kind].points)
    i = counts.index(chosen.candidate.n_jobs)
    others += [results[kind].points[counts[j]].prediction() for j in (i - 1, i + 1) if 0 <= j < len(counts)]
    reasons = (
        f"{chosen.candidate}: predicted {speedup:.1f}× faster than serial "
        f"({_fmt_time(serial.total)} → {_fmt_time(chosen.total)}){assumed}.",
        _executor_reason(w, profile, prediction, results[kind], best_by_kind, parallel, options, n),
        _chunk_reason(w, prediction, parallel, options, n),
    )
    alternatives = tuple(sorted(others, key=lambda p: p.total))
    return Plan(chosen.candidate, prediction, serial, alternatives, reasons, tuple(warnings))


def _doubting_the_probe(w: Workload, profile: Profile) -> Workload:
    """The workload with the threads' serialised fraction raised by the probe's uncertainty.

    A two-thread probe cannot tell CPU work that releases the GIL from work that holds it to within
    :data:`~amorsize.core.model.PROBE_NOISE` (pure Python has been read at 1.48× on a 2-core machine).
    Processes run CPU work in parallel either way, threads only if the GIL is released, so threads
    must win under this pessimistic reading before they are preferred to processes. Waiting work
    (CPU ratio below ``IO_BOUND_CPU_RATIO``) and unprobed work (already assumed GIL-bound) keep theirs.
    """
    if profile.thread_speedup is None or w.cpu_ratio < IO_BOUND_CPU_RATIO:
        return w
    noise = PROBE_NOISE if profile.gil_held is None else GIL_READING_NOISE
    return replace(w, serial_fraction=max(w.serial_fraction, min(1.0, w.serial_fraction + noise)))


#: Uncertainty of the GIL canary's reading (:mod:`amorsize.measure.gil`), as a serialised fraction:
#: five 30 ms readings of one workload spread over 0.0–0.17 on this project's 2-core machines.
GIL_READING_NOISE = 0.15


def _choose_kind(
    best_by_kind: dict[ExecutorKind, _Point], doubtful: _Search, acceptable: Callable[[_Point], bool]
) -> _Point:
    """The best point across kinds; threads are ranked by their pessimistic prediction against processes."""
    if "threads" not in best_by_kind or "processes" not in best_by_kind:
        return _pick(best_by_kind.values(), acceptable)
    threads = best_by_kind["threads"]
    c = threads.candidate
    warm = doubtful.options.warm_workers.get("threads", 0)
    parts = predict_parts(
        doubtful.workload, doubtful.machine, "threads", c.n_jobs, c.chunksize, doubtful.n, warm
    )
    ranked = [p for k, p in best_by_kind.items() if k != "threads"] + [_Point(sum(parts), c, parts)]
    choice = _pick(ranked, acceptable).candidate.executor
    return best_by_kind[choice]


def _search_kinds(
    search: _Search, profile: Profile, warnings: list[str], unforced: list[ExecutorKind] | None = None
) -> dict[ExecutorKind, _KindResult]:
    """Search every executor kind allowed; note in ``warnings`` the kinds left out and why.

    ``unforced`` is the kinds to consider when no executor is forced (default: threads and processes).
    """
    options, machine, w, n = search.options, search.machine, search.workload, search.n
    usable = max(1, machine.usable_cores)
    physical = min(max(1, machine.physical_cores), usable)
    kinds: list[ExecutorKind] = (
        [options.executor] if options.executor is not None else list(unforced or ["threads", "processes"])
    )
    if not profile.picklable:
        if options.executor in _PROCESS_KINDS:
            raise ConfigurationError(
                f"executor={options.executor!r} needs the function and its items to be pickled, but "
                "neither pickle nor cloudpickle could pickle them; use executor='threads' or make "
                "them picklable (module-level function, no open files, locks or sockets in items)"
            )
        for kind in [k for k in kinds if k in _PROCESS_KINDS]:
            kinds.remove(kind)
            warnings.append(
                "The function or its items cannot be pickled (neither pickle nor cloudpickle works), "
                f"so {'Dask' if kind == 'dask' else kind} {'was' if kind == 'dask' else 'were'} "
                "not considered."
            )

    results: dict[ExecutorKind, _KindResult] = {}
    for kind in kinds:
        ceiling = memory_ceiling(w, machine, kind)
        limits: list[tuple[int, str]] = [(n, "items")]
        if options.max_workers is not None:
            limits.append((options.max_workers, "max_workers"))
        if kind in _PROCESS_KINDS:
            limits.append((usable, "cores"))
        else:
            most = max(MAX_THREADS, THREADS_PER_CORE * usable)
            if w.cpu_ratio < IO_BOUND_CPU_RATIO:  # waiting work: start-up and memory decide
                most = max(most, MAX_WAIT_THREADS)
            limits.append((most, "thread limit"))
        if ceiling is not None:
            limits.append((ceiling, "memory"))
        bound, bound_by = min(limits, key=lambda lim: lim[0])
        if options.n_jobs is not None:
            warnings += _forced_workers_warnings(options.n_jobs, kind, usable, ceiling, w, machine)
        elif bound < 1:
            lacking = (
                f"Not enough memory for one {_KIND_WORKERS[kind]} worker ({_worker_memory_text(w, kind)}, "
                f"{_fmt_bytes(machine.available_memory)} available)"
            )
            if options.executor is None:
                warnings.append(f"{lacking}, so {kind} were not considered.")
                continue
            warnings.append(f"{lacking}: risk of the out-of-memory killer.")
            bound = 1
        results[kind] = search.search(kind, bound, bound_by, (physical, usable))
    return results


def _limit_warnings(
    results: dict[ExecutorKind, _KindResult],
    best_by_kind: dict[ExecutorKind, _Point],
    chosen: _Point | None,
    w: Workload,
    machine: Machine,
    options: PlanOptions,
) -> list[str]:
    """Warnings for the memory or core limits the plan ran into (``chosen`` None: the plan is serial)."""
    if options.n_jobs is not None:
        return []
    warnings: list[str] = []
    usable = max(1, machine.usable_cores)
    for kind, point in best_by_kind.items():
        result = results[kind]
        relevant = chosen is None or chosen.candidate.executor == kind
        if not relevant or point.candidate.n_jobs != result.bound:
            continue
        workers = f"{_KIND_WORKERS[kind]} workers"
        if result.bound_by == "memory":
            warnings.append(
                f"Memory limits {workers} to {result.bound} ({_worker_memory_text(w, kind)}, "
                f"{_fmt_bytes(machine.available_memory)} available); more would risk the "
                "out-of-memory killer."
            )
        elif result.bound_by == "cores" and usable < machine.logical_cores and chosen is not None:
            warnings.append(
                f"Only {usable} of {machine.logical_cores} logical cores are usable (CPU affinity or "
                f"cgroup quota), which limits {workers} to {usable}."
            )
    return warnings


def _dominant_overhead(prediction: Prediction) -> str:
    parts = prediction.breakdown()
    return _OVERHEAD_NAMES[max((p for p in _PARTS if p != "compute"), key=lambda p: parts[p])]


def _largest_overhead(prediction: Prediction) -> float:
    parts = prediction.breakdown()
    return max(parts[p] for p in _PARTS if p != "compute")


def _worker_memory_text(w: Workload, kind: ExecutorKind) -> str:
    if kind == "processes":
        return f"about {_fmt_bytes(WORKER_BASE_MEMORY + w.peak_memory_bytes)} each"
    return f"about {_fmt_bytes(w.peak_memory_bytes)} per item in flight"


def _forced_workers_warnings(
    n_jobs: int, kind: ExecutorKind, usable: int, ceiling: int | None, w: Workload, machine: Machine
) -> list[str]:
    """Warnings for a forced worker count that oversubscribes the cores or the memory."""
    warnings = []
    if kind in _PROCESS_KINDS and n_jobs > usable:
        warnings.append(
            f"n_jobs={n_jobs} is more than the {usable} usable cores; the {_KIND_WORKERS[kind]} workers "
            "will share cores."
        )
    if ceiling is not None and n_jobs > ceiling:
        warnings.append(
            f"n_jobs={n_jobs} {_KIND_WORKERS[kind]} workers may not fit in memory "
            f"({_worker_memory_text(w, kind)}, {_fmt_bytes(machine.available_memory)} available): "
            "risk of the out-of-memory killer."
        )
    return warnings


def _probe_text(profile: Profile) -> str:
    s = profile.thread_speedup
    if profile.gil_held is not None:
        return f"the GIL was held {profile.gil_held:.0%} of the time"
    if s is None:
        return "thread speedup not measured"
    return f"{profile.probe_threads} threads ran {s:.2f}× as fast as 1"


def _serial_reason(
    w: Workload, profile: Profile, best: _Point, serial: Prediction, machine: Machine, options: PlanOptions
) -> str:
    """Why the best parallel candidate was not good enough: the verdict, then what held it back."""
    speedup = _speedup(serial.total, best.total)
    saving = serial.total - best.total
    if serial.total <= NOISE_FLOOR:  # no plan can save NOISE_FLOOR
        return (
            f"The whole run takes only {_fmt_time(serial.total)} serially, too little for workers to "
            "pay off; serial."
        )
    if speedup < 1.0:
        head = f"Parallel would be slower than serial (best: {best.candidate}, predicted {speedup:.2f}×)"
    elif saving < NOISE_FLOOR:
        head = f"Parallel would save only {_fmt_time(max(0.0, saving))} (predicted {speedup:.2f}×)"
    else:
        head = (
            f"Parallel would be only {speedup:.2f}× faster (best: {best.candidate}), "
            f"below min_speedup={options.min_speedup:g}"
        )
    prediction = best.prediction()
    if prediction.compute >= _BARELY_PARALLEL * serial.total:
        if best.candidate.executor == "threads" and w.serial_fraction >= 0.5:
            cause = f"the items hold the GIL ({_probe_text(profile)})"
        elif w.cpu_ratio > 1.0:
            cause = f"each item already keeps {w.cpu_ratio:.1f} cores busy"
        elif machine.usable_cores <= 1:
            cause = "only one core is usable"
        else:
            cause = f"the work does not spread over {best.candidate.n_jobs} workers here"
    else:
        cause = (
            f"{_dominant_overhead(prediction)} ({_fmt_time(_largest_overhead(prediction))}) "
            f"outweighs what parallel work saves on {_fmt_time(serial.total)} of work"
        )
    return f"{head}: {cause}; serial."


def _executor_reason(
    w: Workload,
    profile: Profile,
    prediction: Prediction,
    result: _KindResult,
    best_by_kind: dict[ExecutorKind, _Point],
    machine: Machine,
    options: PlanOptions,
    n: int,
) -> str:
    """Why this executor kind, and what stops more workers from helping."""
    cand = prediction.candidate
    kind = cand.executor
    if options.executor is not None:
        why = "Dask was requested" if kind == "dask" else f"{kind} were requested"
    elif kind == "dask":
        why = (
            f"the Dask cluster offers {machine.usable_cores} worker threads at "
            f"{_fmt_time(machine.costs.process_task_overhead)} per task ({machine.costs.source})"
        )
    elif kind == "threads":
        if w.cpu_ratio < IO_BOUND_CPU_RATIO:
            why = (
                f"the items mostly wait (CPU {w.cpu_ratio:.0%} of wall time), so threads overlap the waiting"
            )
        else:
            why = f"the items release the GIL ({_probe_text(profile)}), so threads run them without pickling"
        if "processes" in best_by_kind:
            why += f" (processes: {_fmt_time(best_by_kind['processes'].total)})"
    elif "threads" in best_by_kind and best_by_kind["threads"].total < prediction.total:
        threads = best_by_kind["threads"]
        why = (
            f"threads might be faster ({_fmt_time(threads.total)}), but the GIL reading "
            f"({_probe_text(profile)}) is too coarse to rely on the GIL being released across "
            f"{threads.candidate.n_jobs} threads, so processes, which do not depend on it, run them"
        )
    else:
        why = f"the items hold the GIL ({_probe_text(profile)}), so separate processes run them in parallel"
        if "threads" in best_by_kind:
            why += f" (threads: {_fmt_time(best_by_kind['threads'].total)})"
    if options.n_jobs is not None:
        limit = f"n_jobs={options.n_jobs} was requested"
    elif cand.n_jobs == result.bound and result.bound_by != "thread limit":
        limit = {
            "cores": (
                f"{cand.n_jobs} tasks at once use every worker thread of the cluster"
                if kind == "dask"
                else f"{cand.n_jobs} workers use every usable core"
            ),
            "memory": f"memory allows no more than {cand.n_jobs} workers",
            "max_workers": f"max_workers={cand.n_jobs}",
            "items": f"one worker per item ({cand.n_jobs})",
        }[result.bound_by]
    else:
        chunks = -(-n // cand.chunksize)
        on_cores = transfer_on_cores(kind, prediction.transfer)
        workers, cpu, serialised = compute_bounds(
            w, machine, kind, cand.n_jobs, min(cand.n_jobs, chunks), n, on_cores
        )
        if serialised >= max(workers, cpu):
            limit = (
                f"more threads would not help: {min(1.0, w.serial_fraction):.0%} of each item is serialised"
            )
        elif cpu >= workers:
            limit = f"{cand.n_jobs} workers keep the usable cores busy"
        else:
            limit = f"more than {cand.n_jobs} workers would cost more in start-up and dispatch than they save"
    if kind == "processes" and w.blas_threads > 1 and w.cpu_ratio > 1.0:
        limit += f", each limited to {blas_threads_per_worker(machine, cand.n_jobs)} BLAS threads"
    elif kind == "dask" and w.blas_threads > 1 and w.cpu_ratio > 1.0:
        limit += f", each with {DASK_BLAS_THREADS} BLAS thread (the Dask workers' setting)"
    return f"{why[0].upper()}{why[1:]}; {limit}."


def _chunk_reason(w: Workload, prediction: Prediction, machine: Machine, options: PlanOptions, n: int) -> str:
    """Why this chunk size."""
    cand = prediction.candidate
    if options.chunksize is not None:
        return f"Chunks of {cand.chunksize} were requested."
    item = item_wall_in_worker(w, machine, cand.executor, cand.n_jobs)
    plural = "s" if cand.chunksize != 1 else ""
    chunk = f"Chunks of {cand.chunksize} item{plural} (~{_fmt_time(cand.chunksize * item)} each)"
    if cand.chunksize >= -(-n // cand.n_jobs):
        return f"{chunk}: one chunk per worker."
    if w.cv > HETEROGENEOUS_CV:
        return f"{chunk} stay small because item times vary (CV {w.cv:.2f}): the end of the run stays even."
    work = n * w.mean_duration
    share = prediction.dispatch / work if work > 0 else 0.0
    shown = "under 0.1%" if share < 0.001 else f"{share:.1%}"
    return f"{chunk} keep the per-chunk overhead to {shown} of the work."
