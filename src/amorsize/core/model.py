"""The cost model: the predicted wall time of running ``n`` items one way, and where the time goes.

Pure functions of measured numbers (:class:`~amorsize.core.types.Profile`,
:class:`~amorsize.core.types.Machine`): no clock, no I/O, no processes. Times are seconds.

The model, for ``n`` items of mean wall time ``d`` run as ``n_jobs`` workers × chunks of ``cs``::

    total = startup + dispatch + transfer + compute + imbalance

- **serial**: ``compute = n·d``, everything else 0.
- **The item, decomposed.** With the CPU ratio ``r`` (CPU over wall time), an item does ``r·d``
  core-seconds of CPU work (``r > 1``: it is multi-threaded itself, e.g. BLAS) and waits
  ``d·max(0, 1−r)``. On threads, the part of an item that is serialised (by the GIL or anything
  else) comes from the thread probe's speedup ``s`` on ``k`` threads by Amdahl's law:
  ``f = (k/s − 1)/(k − 1)``, ``2/s − 1`` for the two-thread probe of computing work (``1/s`` when
  ``s < 1``: the threads were slower than one); waiting work is probed wider (``k`` up to 16). The probe reads
  low on short windows, so a serial fraction within :data:`PROBE_NOISE` of zero is not trusted
  beyond what the CPU time explains (on a GIL build only CPU time can hold the GIL):
  ``f = max(f − PROBE_NOISE, min(f, r))``. Not probed: ``f = min(1, r)`` (the CPU part holds the
  GIL, waiting overlaps). A free-threaded build changes only the fallback inside the noise band —
  serialisation is measured, never assumed away.
- **compute** is a roofline, the largest of the resource bounds:
  workers ``n·d_w / n_eff`` (``n_eff = min(n_jobs, chunks)``, ``d_w`` the item's wall time inside
  a worker), CPU ``n·r·d / cpu_capacity(n_jobs)`` (physical cores first, then
  :data:`SMT_GAIN` per worker on a hyper-thread sibling, nothing beyond the usable cores), and on
  threads the serialised part ``n·f·d``. Local processes also spend the transfer term on the
  cores: once more in the workers (their bound is ``(n·d_w + transfer) / n_eff``) and twice in the
  CPU bound (both ends of the pipe pickle and copy). 200 results of 1 MB from 2 ms items on 2
  cores: predicted 0.6 s without it, measured 0.94–1.15 s, predicted 0.93 s with it. Workers of
  multi-threaded BLAS items (processes, and a threaded run as a whole) are limited to
  :func:`blas_threads_per_worker` threads so workers × threads never exceed the usable cores; an
  item then takes what the probe measured under that limit, or unmeasured
  ``d_w = d·r / min(r, threads)`` for an item that used ``r`` cores, and uses no more than
  ``threads·d_w`` of CPU.
- **startup**: processes boot concurrently (the child does the work), so cold workers cost one
  ``process_startup`` per wave of usable cores; threads start one after another in the parent,
  ``thread_startup`` each. Warm workers (already running in a reusable pool) cost nothing.
- **Dask** is modelled as processes, on the machine that describes the *cluster*
  (:func:`amorsize.measure.cluster.cluster_machine`): its cores are the workers' threads, its
  ``process_task_overhead`` and bandwidth are measured against the scheduler, its start-up is 0
  (the workers already run). Two things differ from local processes: Dask's nannies start workers
  with one BLAS/OpenMP thread (:data:`DASK_BLAS_THREADS`), and the worker processes' own memory is
  already spent, so a busy worker thread costs only the item's memory growth.
- **dispatch**: ``chunks × task overhead``, parent-side serial work (conservative: not overlapped).
- **transfer** (processes only; threads share memory): ``n·(serialize + (in + out bytes) / bandwidth)``,
  also parent-side and not overlapped.
- **imbalance**, the end-of-run tail, the largest of three estimates. *Lockstep*: chunks of mean
  duration scheduled on the workers (exact for the chunk layout: a partial last round leaves
  workers idle), counted only beyond what compute already allows. *Staggered*: uneven items
  desynchronise the workers, so when the queue runs dry the busy ones are on average half-way
  through a chunk (:data:`STAGGER`), weighted by the coefficient of variation (capped at 1).
  *Longest item*: never less than the longest sampled item's excess over the mean. With more than
  one round of chunks the runner shrinks the last ones (its adaptive tail), so the lockstep and
  staggered losses act on chunks of :data:`TAIL_SHRINK` of their size, never less than one item
  (the staggered one always: it arises only when there are rounds to desynchronise).

Every part is ≥ 0 and, for items of equal duration, the total never falls when items are added.

Example:
    >>> from amorsize.core.types import Candidate, Machine, MachineCosts, Profile
    >>> profile = Profile(durations=(0.01,) * 4, cpu_times=(0.01,) * 4, input_bytes=(100,) * 4,
    ...                   output_bytes=(100,) * 4, serialize_seconds=(0.0,) * 4, thread_speedup=1.0)
    >>> costs = MachineCosts(0.0, 0.0, 1e12, 0.0, 0.0)
    >>> machine = Machine(4, 4, 4, 2**33, None, "fork", False, costs)
    >>> round(predict(profile, machine, Candidate("processes", 4, 25), 1000).total, 6)
    2.5
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from amorsize.core.types import Candidate, ExecutorKind, Machine, Prediction, Profile, pstdev, weighted_mean
from amorsize.errors import ConfigurationError

__all__ = [
    "DASK_BLAS_THREADS",
    "FALLBACK_PIPE_BANDWIDTH",
    "MIN_PIPE_BANDWIDTH",
    "PROBE_NOISE",
    "SMT_GAIN",
    "STAGGER",
    "TAIL_SHRINK",
    "WORKER_BASE_MEMORY",
    "Workload",
    "blas_threads_per_worker",
    "chunk_costs",
    "compute_bounds",
    "cpu_capacity",
    "item_wall_in_worker",
    "memory_ceiling",
    "per_worker_memory",
    "predict",
    "predict_parts",
    "predict_workload",
    "transfer_on_cores",
]

#: Resident memory of an idle worker process, bytes. Measured with psutil on CPython 3.11 / Linux
#: (x86-64): a worker that imported ``amorsize.run.backend`` showed RSS 21.0 MiB (fork),
#: 21.3 MiB (forkserver), 23.2 MiB (spawn); rounded up to 30 MiB for the runner's own state and the
#: unpickled function. RSS counts pages shared with the parent, so this errs on the safe side.
WORKER_BASE_MEMORY = 30 * 2**20

#: Extra throughput of one more worker placed on a hyper-thread sibling of a busy core, as a fraction
#: of a core. The low end of the 15–30 % commonly reported for two-way SMT on branchy integer code
#: such as the CPython interpreter (Intel's Hyper-Threading overview says "up to 30 %"). Items that
#: are multi-threaded themselves (CPU ratio > 1, typically BLAS) get no gain: they saturate the
#: floating-point units (the seed design, §3.A).
SMT_GAIN = 0.15

#: Uncertainty of the serial fraction ``2/s − 1`` read from the two-thread probe. The sampler's
#: measurements (measure/sampler.py, PROBE_TARGET_SECONDS) show 30 ms probes of work that truly scales
#: 2× reading 1.31–1.87×, i.e. serial fractions of 0.07–0.53 where the truth is 0; the error is
#: one-sided (a short window catches the second core waking up). 0.3 sits inside that range.
PROBE_NOISE = 0.3

#: Two-thread probe readings below this are clamped to it: slower than 10× for two threads is beyond
#: what contention explains and is taken as a glitch (keeps the serialised part finite).
MIN_THREAD_SPEEDUP = 0.1

#: When the queue of chunks runs dry, the workers still busy are on average half-way through a chunk
#: (residual life of a uniform phase, renewal theory), so a fully staggered finish costs about half a
#: chunk: ``STAGGER × (n_eff − 1)/n_eff × chunk duration``.
STAGGER = 0.5

#: Assumption about the runner: once less than a round of chunks remains it hands out chunks of about
#: half the planned size (a conservative stand-in for guided self-scheduling, Polychronopoulos & Kuck
#: 1987, which hands out remaining/P), so end-of-run losses act on half-size chunks. To be corrected
#: from run history (predicted vs measured).
TAIL_SHRINK = 0.5

#: Bytes per second assumed when the machine's measured pipe bandwidth is missing, zero or not finite:
#: MachineCosts.fallback's figure (typical of a 2020s Linux laptop).
FALLBACK_PIPE_BANDWIDTH = 500e6

#: BLAS/OpenMP threads an item gets in a Dask worker: ``distributed``'s nanny starts workers with
#: OMP_NUM_THREADS, MKL_NUM_THREADS and OPENBLAS_NUM_THREADS set to 1 (its default
#: ``distributed.nanny.pre-spawn-environ``, checked on distributed 2026.8).
DASK_BLAS_THREADS = 1

#: Floor on the pipe bandwidth, bytes per second: keeps bytes / bandwidth finite for a subnormal or
#: absurdly small measurement (any real pipe is at least a million times faster).
MIN_PIPE_BANDWIDTH = 1.0

_PROCESS_KINDS = ("processes", "dask")


def _finite(x: float, default: float = 0.0) -> float:
    """``x`` if it is a finite number ≥ 0, else ``default``."""
    return x if math.isfinite(x) and x >= 0 else default


@dataclass(frozen=True)
class Workload:
    """The numbers of a :class:`Profile` the model uses, computed once (a profile recomputes its means).

    Build it with :meth:`from_profile`. Non-finite or negative measurements are read as 0.

    Attributes:
        mean_duration: mean wall seconds per item.
        max_duration: longest sampled item, seconds (≥ mean).
        cv: coefficient of variation of item durations.
        cpu_ratio: CPU seconds over wall seconds (≈0 waiting, ≈1 CPU, > 1 multi-threaded).
        serial_fraction: fraction of an item that is serialised when items run on threads.
        serialize_seconds: mean seconds to pickle and unpickle one item and its result.
        payload_bytes: mean pickled bytes of one item plus its result.
        peak_memory_bytes: memory growth of one call, bytes.
        blas_threads: BLAS/OpenMP threads of the sampling process (0: none loaded).
    """

    mean_duration: float
    max_duration: float
    cv: float
    cpu_ratio: float
    serial_fraction: float
    serialize_seconds: float
    payload_bytes: float
    peak_memory_bytes: int
    blas_threads: int
    capped_duration: float = 0.0
    capped_blas_threads: int = 0

    @classmethod
    def from_profile(cls, profile: Profile, *, free_threaded: bool = False) -> Workload:
        """Summarise ``profile`` (the same statistics as its properties, robust to non-finite values).

        Args:
            profile: the dry run's measurements.
            free_threaded: the run happens without a GIL (then CPU time is no evidence of serialisation).

        Returns:
            The summary.
        """
        durations = [_finite(x) for x in profile.durations]
        weights = profile.weights if len(profile.weights) == len(durations) else ()
        mean = weighted_mean(durations, weights)
        cv = pstdev(durations, weights) / mean if len(durations) >= 2 and mean > 0 else 0.0
        cpus = [_finite(x) for x in profile.cpu_times]
        cpu = weighted_mean(cpus, weights if len(cpus) == len(weights) else ())
        cpu_ratio = _finite(cpu / mean if mean > 0 else 1.0, 1.0)
        return cls(
            mean_duration=mean,
            max_duration=max(durations, default=0.0),
            cv=_finite(cv),
            cpu_ratio=cpu_ratio,
            serial_fraction=_serial_fraction(
                cpu_ratio,
                profile.thread_speedup,
                free_threaded or profile.free_threaded,
                profile.probe_threads,
                profile.gil_held,
            ),
            serialize_seconds=_finite(_mean(profile.serialize_seconds)),
            payload_bytes=_finite(_mean(profile.input_bytes)) + _finite(_mean(profile.output_bytes)),
            peak_memory_bytes=max(0, profile.peak_memory_bytes),
            blas_threads=max(0, profile.blas_threads),
            capped_duration=_finite(profile.capped_duration or 0.0),
            capped_blas_threads=max(0, profile.capped_blas_threads),
        )


def _mean(values: tuple[float, ...] | tuple[int, ...]) -> float:
    return sum(values) / len(values) if values else 0.0


def _serial_fraction(
    cpu_ratio: float,
    thread_speedup: float | None,
    free_threaded: bool,
    probe_threads: int = 2,
    gil_held: float | None = None,
) -> float:
    """Fraction of an item's wall time that threads cannot overlap (see the module docstring).

    With ``k = probe_threads`` threads, Amdahl's law ``s = k / (1 + (k−1)·f)`` gives
    ``f = (k/s − 1) / (k − 1)``: ``2/s − 1`` for the two-thread probe. A canary's reading of the
    time the GIL was held is that fraction directly, without the probe's noise band.
    """
    if gil_held is not None and math.isfinite(gil_held) and not free_threaded:
        return min(1.0, max(0.0, gil_held))
    if thread_speedup is None or not math.isfinite(thread_speedup) or thread_speedup <= 0:
        return min(1.0, cpu_ratio)  # not probed: the CPU part holds the GIL, waiting overlaps
    s = max(MIN_THREAD_SPEEDUP, thread_speedup)
    k = max(2, probe_threads)
    probed = (k / s - 1.0) / (k - 1) if s >= 1.0 else 1.0 / s
    probed = max(0.0, probed)
    explained = 0.0 if free_threaded else min(probed, cpu_ratio)
    return max(probed - PROBE_NOISE, explained)


def blas_threads_per_worker(machine: Machine, n_jobs: int) -> int:
    """Per-process BLAS/OpenMP thread limit so that workers × threads ≤ usable cores.

    Args:
        machine: the machine.
        n_jobs: number of worker processes.

    Returns:
        ``max(1, usable_cores // n_jobs)``.

    Example:
        >>> from amorsize.core.types import Machine, MachineCosts
        >>> m = Machine(8, 8, 4, 2**33, None, "fork", False, MachineCosts.fallback("fork"))
        >>> blas_threads_per_worker(m, 3)
        2
    """
    return max(1, max(1, machine.usable_cores) // max(1, n_jobs))


def per_worker_memory(profile: Profile) -> int:
    """Estimated resident memory of one busy worker process, bytes.

    An idle worker (:data:`WORKER_BASE_MEMORY`) plus the item's peak memory growth.

    Args:
        profile: the dry run's measurements.

    Returns:
        Bytes, > 0.

    Example:
        >>> from amorsize.core.types import Profile
        >>> p = Profile((0.1,), (0.1,), (10,), (10,), (0.0,), peak_memory_bytes=2 * 2**20)
        >>> per_worker_memory(p) // 2**20
        32
    """
    return WORKER_BASE_MEMORY + max(0, profile.peak_memory_bytes)


def memory_ceiling(workload: Workload, machine: Machine, executor: ExecutorKind) -> int | None:
    """Most workers of ``executor`` that fit in the available memory, or None when memory sets no limit.

    Processes each cost :data:`WORKER_BASE_MEMORY` plus the item's peak growth; threads share the
    process, so only the items' growth counts (no limit when it is unknown, i.e. 0). Dask worker
    threads count like threads: their processes already run, ``machine`` is the cluster's and its
    available memory is what the workers' limits leave.

    Args:
        workload: the workload summary.
        machine: the machine.
        executor: the executor kind.

    Returns:
        A count ≥ 0 (0: not even one worker fits), or None.
    """
    available = max(0, machine.available_memory)
    if executor == "processes":
        return available // (WORKER_BASE_MEMORY + workload.peak_memory_bytes)
    if executor in ("threads", "dask") and workload.peak_memory_bytes > 0:
        return available // workload.peak_memory_bytes
    return None


def cpu_capacity(machine: Machine, n_jobs: int, *, smt_gain: float = SMT_GAIN) -> float:
    """Cores' worth of CPU throughput that ``n_jobs`` busy workers get.

    Workers take a physical core each first; each further worker (up to the usable cores) shares a
    core as a hyper-thread sibling and adds ``smt_gain`` of a core; workers beyond the usable cores
    add nothing.

    Args:
        machine: the machine.
        n_jobs: busy workers (≥ 1).
        smt_gain: throughput a hyper-thread sibling adds, as a fraction of a core.

    Returns:
        Cores, ≥ 1.

    Example:
        >>> from amorsize.core.types import Machine, MachineCosts
        >>> m = Machine(8, 8, 4, 2**33, None, "fork", False, MachineCosts.fallback("fork"))
        >>> cpu_capacity(m, 2), cpu_capacity(m, 8, smt_gain=0.25), cpu_capacity(m, 64, smt_gain=0.25)
        (2.0, 5.0, 5.0)
    """
    usable = max(1, machine.usable_cores)
    physical = min(max(1, machine.physical_cores), usable)
    workers = min(max(1, n_jobs), usable)
    return min(workers, physical) + smt_gain * max(0, workers - physical)


def _blas_limit(machine: Machine, executor: ExecutorKind, n_jobs: int) -> int:
    """BLAS/OpenMP threads an item gets in a worker of ``executor`` (see :func:`item_wall_in_worker`)."""
    return DASK_BLAS_THREADS if executor == "dask" else blas_threads_per_worker(machine, n_jobs)


def _blas_capped(workload: Workload, executor: ExecutorKind) -> bool:
    """Whether items run with fewer BLAS threads in a worker of ``executor`` than they used when sampled."""
    return executor != "serial" and workload.cpu_ratio > 1.0 and workload.blas_threads > 1


def item_wall_in_worker(workload: Workload, machine: Machine, executor: ExecutorKind, n_jobs: int) -> float:
    """Wall seconds one item takes inside a worker, alone on its core(s).

    It is the measured mean, except for multi-threaded BLAS items: the runner limits each worker
    process — and a threaded run as a whole — to :func:`blas_threads_per_worker` threads per worker
    (Dask workers run with :data:`DASK_BLAS_THREADS`). The item then takes what the thread probe
    measured under that limit (:attr:`~amorsize.core.types.Profile.capped_duration`) — for
    processes only when the probe found the GIL released, since a GIL-bound probe is slowed by the
    GIL too — or, unmeasured, ``d·r / min(r, threads)`` for an item that kept ``r`` cores busy.

    Args:
        workload: the workload summary.
        machine: the machine.
        executor: the executor kind.
        n_jobs: workers.

    Returns:
        Seconds.
    """
    d = workload.mean_duration
    r = workload.cpu_ratio
    if not _blas_capped(workload, executor):
        return d
    threads = _blas_limit(machine, executor, n_jobs)
    if (
        workload.capped_duration > 0
        and threads == workload.capped_blas_threads
        and (executor == "threads" or workload.serial_fraction <= PROBE_NOISE)
    ):
        return workload.capped_duration
    return d * r / min(r, float(threads))


def transfer_on_cores(executor: ExecutorKind, transfer: float) -> float:
    """The part of the transfer term spent on the run's own cores (:func:`compute_bounds`'s ``transfer``).

    All of it for local processes, which pickle and copy on both ends of the pipe; none for threads
    (nothing shipped) and Dask (its parent is elsewhere).
    """
    return transfer if executor == "processes" else 0.0


def compute_bounds(
    workload: Workload,
    machine: Machine,
    executor: ExecutorKind,
    n_jobs: int,
    n_eff: int,
    n_items: int,
    transfer: float = 0.0,
) -> tuple[float, float, float]:
    """The roofline's three bounds on the compute time of ``n_items`` items on parallel workers.

    Args:
        workload: the workload summary.
        machine: the machine.
        executor: ``"threads"``, ``"processes"`` or ``"dask"``.
        n_jobs: workers.
        n_eff: workers that get work, ``min(n_jobs, chunks)`` (≥ 1).
        n_items: items.
        transfer: seconds of shipping items and results (the transfer term) done on these cores:
            local processes pickle and copy on both ends of the pipe, so the workers spend it once
            more and the cores twice (0 for threads, and for Dask, whose parent is elsewhere).

    Returns:
        ``(workers, cpu, serialised)`` seconds: every worker busy; every usable core busy; the part
        threads cannot overlap done one after another (0 for processes). Compute is their maximum.
    """
    n, d, r = n_items, workload.mean_duration, workload.cpu_ratio
    d_w = item_wall_in_worker(workload, machine, executor, n_jobs)
    workers = (n * d_w + transfer) / max(1, n_eff)
    cpu = 0.0
    if r > 0 or transfer > 0:
        per_item = r * d
        if _blas_capped(workload, executor):  # capped: no more CPU than its threads give it
            per_item = min(per_item, _blas_limit(machine, executor, n_jobs) * d_w)
        capacity = cpu_capacity(machine, n_jobs, smt_gain=SMT_GAIN if r <= 1.0 else 0.0)
        cpu = (n * per_item + 2.0 * transfer) / capacity
    serialised = n * workload.serial_fraction * d if executor == "threads" else 0.0
    return workers, cpu, serialised


def _validate(candidate: Candidate, n_items: int, warm_workers: int) -> None:
    if candidate.executor not in ("serial", "threads", "processes", "dask"):
        raise ConfigurationError(
            f"executor must be one of 'serial', 'threads', 'processes', 'dask' (got {candidate.executor!r})"
        )
    if candidate.n_jobs < 1:
        raise ConfigurationError(f"n_jobs must be >= 1 (got {candidate.n_jobs}); use 1 for one worker")
    if candidate.chunksize < 1:
        raise ConfigurationError(f"chunksize must be >= 1 (got {candidate.chunksize})")
    if n_items < 0:
        raise ConfigurationError(f"n_items must be >= 0 (got {n_items})")
    if warm_workers < 0:
        raise ConfigurationError(f"warm_workers must be >= 0 (got {warm_workers})")


Parts = tuple[float, float, float, float, float]
"""``(startup, dispatch, transfer, compute, imbalance)`` seconds of one prediction."""


def predict_parts(
    workload: Workload,
    machine: Machine,
    executor: ExecutorKind,
    n_jobs: int,
    chunksize: int,
    n_items: int,
    warm_workers: int = 0,
) -> Parts:
    """The fast core of :func:`predict`, for searches: no validation, no :class:`Prediction` built.

    Args:
        workload: the workload summary.
        machine: the machine.
        executor: the executor kind.
        n_jobs: workers (≥ 1).
        chunksize: items per chunk (≥ 1).
        n_items: items to run (≥ 0).
        warm_workers: workers already running (≥ 0).

    Returns:
        ``(startup, dispatch, transfer, compute, imbalance)`` in seconds, each finite and ≥ 0 for
        finite inputs.
    """
    return chunk_costs(workload, machine, executor, n_jobs, n_items, warm_workers)(chunksize)


def chunk_costs(
    workload: Workload,
    machine: Machine,
    executor: ExecutorKind,
    n_jobs: int,
    n_items: int,
    warm_workers: int = 0,
) -> Callable[[int], Parts]:
    """:func:`predict_parts` as a function of the chunk size, for one executor and worker count.

    What does not depend on the chunk size (start-up, transfer, an item's time in a worker, the
    compute bound with every worker busy) is worked out once, so a search over chunk sizes pays only
    for the rest (a planning call evaluates a few hundred chunk sizes). Arguments as
    :func:`predict_parts`, without the chunk size.

    Returns:
        A function from a chunk size (≥ 1) to ``(startup, dispatch, transfer, compute, imbalance)``.
    """
    n = n_items
    d = workload.mean_duration
    if n <= 0:
        return lambda chunksize: (0.0, 0.0, 0.0, 0.0, 0.0)
    if executor == "serial":
        return lambda chunksize: (0.0, 0.0, 0.0, n * d, 0.0)

    costs = machine.costs
    cold = max(0, n_jobs - warm_workers)
    if executor in _PROCESS_KINDS:
        waves = -(-cold // max(1, machine.usable_cores))
        startup = _finite(costs.process_startup) * waves
        per_chunk = _finite(costs.process_task_overhead)
        bandwidth = costs.pipe_bandwidth
        if not (bandwidth > 0):  # zero, negative or NaN: unknown
            bandwidth = FALLBACK_PIPE_BANDWIDTH
        bandwidth = max(bandwidth, MIN_PIPE_BANDWIDTH)
        per_item = workload.serialize_seconds + (
            workload.payload_bytes / bandwidth if workload.payload_bytes > 0 else 0.0
        )
        transfer = n * per_item
    else:
        startup = _finite(costs.thread_startup) * cold
        per_chunk = _finite(costs.thread_task_overhead)
        transfer = 0.0
    on_cores = transfer_on_cores(executor, transfer)
    all_busy = min(n_jobs, n)
    compute_all_busy = max(compute_bounds(workload, machine, executor, n_jobs, all_busy, n, on_cores))
    d_item = item_wall_in_worker(workload, machine, executor, n_jobs)
    longest = (workload.max_duration - d) * (d_item / d) if d > 0 else 0.0
    d_w = d_item + on_cores / n  # a worker also ships its items: chunks last that much longer
    stagger = min(1.0, workload.cv) * STAGGER

    def parts(chunksize: int) -> Parts:
        chunks = -(-n // chunksize)
        n_eff = min(n_jobs, chunks)
        if n_eff == all_busy:
            compute = compute_all_busy
        else:
            compute = max(compute_bounds(workload, machine, executor, n_jobs, n_eff, n, on_cores))
        # imbalance: the end-of-run tail
        imbalance = 0.0
        if n_eff > 1 and d_w > 0:
            chunk = chunksize * d_w
            rounds = -(-chunks // n_jobs)
            in_last_round = chunks - (rounds - 1) * n_jobs
            last_chunk = (n - (chunks - 1) * chunksize) * d_w
            # lockstep: the chunk schedule at mean durations, beyond what the binding resource allows
            makespan = (rounds - 1) * chunk + (chunk if in_last_round >= 2 else last_chunk)
            lockstep = max(0.0, makespan - compute)
            shrink = max(TAIL_SHRINK, 1.0 / chunksize)  # a chunk shrinks to no less than one item
            if rounds > 1:  # the runner can shrink only chunks not yet handed out
                lockstep *= shrink
            staggered = stagger * (n_eff - 1) / n_eff * shrink * chunk
            imbalance = max(lockstep, staggered, longest)
        return startup, chunks * per_chunk, transfer, compute, imbalance

    return parts


def predict_workload(
    workload: Workload,
    machine: Machine,
    candidate: Candidate,
    n_items: int,
    *,
    warm_workers: int = 0,
) -> Prediction:
    """:func:`predict` for a precomputed :class:`Workload`.

    Raises:
        ConfigurationError: ``candidate`` has ``n_jobs`` or ``chunksize`` < 1 or an unknown executor,
            or ``n_items`` / ``warm_workers`` is negative.
    """
    _validate(candidate, n_items, warm_workers)
    startup, dispatch, transfer, compute, imbalance = predict_parts(
        workload, machine, candidate.executor, candidate.n_jobs, candidate.chunksize, n_items, warm_workers
    )
    return Prediction(candidate, startup, dispatch, transfer, compute, imbalance)


def predict(
    profile: Profile,
    machine: Machine,
    candidate: Candidate,
    n_items: int,
    *,
    warm_workers: int = 0,
) -> Prediction:
    """Predicted wall time of running ``n_items`` items with ``candidate``, with its breakdown.

    Args:
        profile: the dry run's measurements.
        machine: the machine.
        candidate: executor kind, workers and chunk size. Dask is modelled as worker processes on
            ``machine`` (pass the cluster's machine, see the module docstring).
        n_items: items to run.
        warm_workers: workers of this kind already running in a reusable pool (no start-up cost).

    Returns:
        The prediction; its parts are finite, ≥ 0 and sum to its total.

    Raises:
        ConfigurationError: ``candidate`` has ``n_jobs`` or ``chunksize`` < 1 or an unknown executor,
            or ``n_items`` / ``warm_workers`` is negative.

    Example:
        >>> from amorsize.core.types import Candidate, Machine, MachineCosts, Profile
        >>> p = Profile((0.001,) * 3, (0.001,) * 3, (50,) * 3, (50,) * 3, (1e-5,) * 3)
        >>> m = Machine(4, 4, 4, 2**33, None, "fork", False, MachineCosts.fallback("fork"))
        >>> predict(p, m, Candidate("serial", 1, 1), 100).total
        0.1
    """
    free = machine.free_threaded or profile.free_threaded
    return predict_workload(
        Workload.from_profile(profile, free_threaded=free),
        machine,
        candidate,
        n_items,
        warm_workers=warm_workers,
    )
