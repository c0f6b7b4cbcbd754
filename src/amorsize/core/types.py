"""The plain, frozen values that flow from MEASURE through PLAN to RUN.

Nothing here reads a clock, touches the disk or starts a process: these are numbers with names.

- :class:`Profile`  — what the dry run measured about ``func`` on the sampled items.
- :class:`MachineCosts` and :class:`Machine` — what the probe measured about this computer.
- :class:`Candidate` — one way to run: executor kind, workers, chunk size.
- :class:`Prediction` — the predicted wall time of a candidate, with its breakdown.
- :class:`PlanOptions` — the user's knobs that shape the search.
- :class:`Plan` — the planner's answer: the chosen candidate, the alternatives, reasons and warnings.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

ExecutorKind = Literal["serial", "threads", "processes", "dask"]
EXECUTOR_KINDS: tuple[ExecutorKind, ...] = ("serial", "threads", "processes", "dask")

#: Coefficient of variation above which a workload counts as heterogeneous. The seed's rule
#: (adaptive chunking note, iteration 10): CV < 0.3 homogeneous, CV > 0.5 heterogeneous.
HETEROGENEOUS_CV = 0.5

#: CPU time below this fraction of wall time marks an item as waiting (I/O-bound). A sleeping or
#: network-bound item shows ~0.0; pure Python shows ~1.0; multi-threaded BLAS shows > 1.
IO_BOUND_CPU_RATIO = 0.5

#: Waiting work (CPU under :data:`IO_BOUND_CPU_RATIO` of wall time) may use up to this many threads:
#: the model's start-up cost (one ``thread_startup`` each) then decides. At 64, 100 × 20 ms sleeps
#: ran in 3 rounds of 44 threads (~60 ms) where 100 threads take one (~35 ms), and 200 × 50 ms in 4
#: rounds (~200 ms) where 200 threads took ~90 ms. ``max_workers`` lowers it (a server that allows
#: fewer connections). The planner bounds threads by it (``amorsize.core.planner`` re-exports it),
#: and the dry run's head start (``amorsize.measure.sampler``) starts no more at once.
MAX_WAIT_THREADS = 256


def _mean(values: tuple[float, ...]) -> float:
    return statistics.fmean(values) if values else 0.0


def weighted_mean(values: Sequence[float], weights: Sequence[float] = ()) -> float:
    """Mean of ``values``, each counted ``weights[i]`` times (empty weights: once each; 0 if empty).

    Example:
        >>> weighted_mean([1.0, 3.0]), weighted_mean([1.0, 3.0], [3.0, 1.0])
        (2.0, 1.5)
    """
    if not values:
        return 0.0
    if not weights:
        return math.fsum(values) / len(values)
    return math.fsum(x * w for x, w in zip(values, weights, strict=True)) / math.fsum(weights)


def pstdev(values: Sequence[float], weights: Sequence[float] = ()) -> float:
    """Population standard deviation in floats (``statistics.pstdev`` is exact and ~50× slower).

    Args:
        values: at least one finite number.
        weights: how many times each value counts (empty: once each).

    Returns:
        The standard deviation, ≥ 0.

    Example:
        >>> pstdev([1.0, 3.0])
        1.0
    """
    mean = weighted_mean(values, weights)
    squares = [(x - mean) ** 2 for x in values]
    return math.sqrt(weighted_mean(squares, weights))


@dataclass(frozen=True)
class Profile:
    """What the dry run measured about ``func`` on the sampled items.

    Times are seconds, sizes bytes. Per-item tuples are in input order and all have length
    ``n_sampled``.

    Attributes:
        durations: wall time of each sampled call.
        cpu_times: CPU time of each sampled call (process CPU time, all threads).
        input_bytes: pickled size of each sampled item.
        output_bytes: pickled size of each sampled result.
        serialize_seconds: time to pickle and unpickle each item and its result (parent-side cost).
        peak_memory_bytes: largest resident-memory growth seen during one call (0 when unknown).
        total_items: length of the input, or None when it is an iterator of unknown length.
        thread_speedup: measured speedup of running sampled items on ``probe_threads`` threads at
            once versus one after another (≈1.0: holds the GIL; ≈``probe_threads``: releases it or
            waits). None if not probed.
        pickle_method: how the function and items pickle: ``"pickle"``, ``"cloudpickle"`` or None
            when neither works (then only serial and threads are possible).
        blas_threads: the largest thread count of a BLAS/OpenMP library loaded in this process
            (threadpoolctl), 0 when none is loaded; also 0 when the items used less than 1.2 ×
            their wall time in CPU time (no library ran them on several threads: not read then).
        free_threaded: True on a Python build running without the GIL.
        probe_threads: how many threads the probe ran at once: 2 for work that computes, more for
            work that waits (how far waiting overlaps is what decides its thread count).
        capped_duration: for items that are multi-threaded through BLAS/OpenMP, the wall seconds
            one item took on each of the probe's threads with those libraries limited to
            ``capped_blas_threads`` threads (None: not measured). A small BLAS call can be as fast
            single-threaded: CPU time then overstates what the extra threads did.
        capped_blas_threads: the BLAS/OpenMP thread limit ``capped_duration`` was measured under.
        gil_held: share of the serial phase's time the items held the GIL, read by a canary thread
            (:mod:`amorsize.measure.gil`); when set, ``thread_speedup`` is derived from it
            (``2 / (1 + gil_held)``). None: not read (waiting work, too short a dry run, no GIL).
        weights: how many input items each sampled call stands for, same order as ``durations``
            (empty: one each). The dry run samples a few later positions of a long sequence; when
            they differ from the first items, each stands for its stretch of the input (see
            :mod:`amorsize.measure.sampler`), and the duration statistics are weighted.
    """

    durations: tuple[float, ...]
    cpu_times: tuple[float, ...]
    input_bytes: tuple[int, ...]
    output_bytes: tuple[int, ...]
    serialize_seconds: tuple[float, ...]
    peak_memory_bytes: int = 0
    total_items: int | None = None
    thread_speedup: float | None = None
    pickle_method: str | None = "pickle"
    blas_threads: int = 0
    free_threaded: bool = False
    probe_threads: int = 2
    capped_duration: float | None = None
    capped_blas_threads: int = 0
    gil_held: float | None = None
    weights: tuple[float, ...] = ()

    @property
    def n_sampled(self) -> int:
        """How many items the dry run called ``func`` on."""
        return len(self.durations)

    @property
    def mean_duration(self) -> float:
        """Mean wall seconds per item (weighted by :attr:`weights`)."""
        return weighted_mean(self.durations, self.weights)

    @property
    def max_duration(self) -> float:
        """Longest sampled item, seconds."""
        return max(self.durations, default=0.0)

    @property
    def coefficient_of_variation(self) -> float:
        """Standard deviation of item durations divided by their mean (0 for < 2 samples)."""
        if len(self.durations) < 2:
            return 0.0
        mean = self.mean_duration
        if mean <= 0:
            return 0.0
        return pstdev(self.durations, self.weights) / mean

    @property
    def is_heterogeneous(self) -> bool:
        """True when item durations vary enough to matter for load balancing."""
        return self.coefficient_of_variation > HETEROGENEOUS_CV

    @property
    def cpu_ratio(self) -> float:
        """CPU time over wall time of the sampled calls (≈0 waiting, ≈1 CPU, >1 multi-threaded)."""
        wall = weighted_mean(self.durations, self.weights)
        return weighted_mean(self.cpu_times, self.weights) / wall if wall > 0 else 1.0

    @property
    def is_io_bound(self) -> bool:
        """True when the items spend most of their time waiting rather than computing."""
        return self.cpu_ratio < IO_BOUND_CPU_RATIO

    @property
    def releases_gil(self) -> bool:
        """True when the probe's threads ran the sampled items clearly faster than one (≥ 75 % of linear)."""
        return self.thread_speedup is not None and self.thread_speedup >= 0.75 * max(2, self.probe_threads)

    @property
    def mean_input_bytes(self) -> float:
        """Mean pickled size of one item."""
        return _mean(tuple(float(b) for b in self.input_bytes))

    @property
    def mean_output_bytes(self) -> float:
        """Mean pickled size of one result."""
        return _mean(tuple(float(b) for b in self.output_bytes))

    @property
    def mean_serialize_seconds(self) -> float:
        """Mean seconds to pickle and unpickle one item and its result."""
        return _mean(self.serialize_seconds)

    @property
    def picklable(self) -> bool:
        """Whether the function and the items can be sent to another process."""
        return self.pickle_method is not None


@dataclass(frozen=True)
class MachineCosts:
    """Measured (or fallback) costs of running work off the calling thread on this machine.

    Attributes:
        process_startup: seconds to start one worker process with the machine's start method,
            until it can run a task.
        process_task_overhead: parent-side seconds per chunk sent to a process pool and collected
            again, pipelined (the throughput cost, not the one-way latency), for an empty chunk.
        pipe_bandwidth: bytes per second through the parent↔worker pipe (pickling excluded).
        thread_startup: seconds to start one worker thread.
        thread_task_overhead: seconds per chunk submitted to a thread pool and collected.
        source: ``"measured"`` when probed on this machine, ``"fallback"`` for the built-in defaults.
    """

    process_startup: float
    process_task_overhead: float
    pipe_bandwidth: float
    thread_startup: float
    thread_task_overhead: float
    source: str = "fallback"

    @classmethod
    def fallback(cls, start_method: str) -> MachineCosts:
        """Defaults for when measuring is impossible.

        Start-up costs are the seed design's (0.05 s with ``fork``, 0.2 s with ``spawn``; forkserver
        is between); the per-task and bandwidth figures are typical of a 2020s Linux laptop.
        """
        startup = {"fork": 0.05, "forkserver": 0.1}.get(start_method, 0.2)
        return cls(
            process_startup=startup,
            process_task_overhead=100e-6,
            pipe_bandwidth=500e6,
            thread_startup=100e-6,
            thread_task_overhead=20e-6,
            source="fallback",
        )


@dataclass(frozen=True)
class Machine:
    """What this computer offers to a run.

    Attributes:
        logical_cores: ``os.cpu_count()``.
        usable_cores: cores this process may really use: min of logical, CPU affinity and the
            cgroup CPU quota.
        physical_cores: physical cores (psutil), capped at ``usable_cores``.
        available_memory: bytes of memory available now, after the cgroup limit.
        memory_limit: the cgroup memory limit in bytes, or None when there is none.
        start_method: the multiprocessing start method runs will use.
        free_threaded: True on a Python build without the GIL.
        costs: measured or fallback per-worker and per-task costs.
    """

    logical_cores: int
    usable_cores: int
    physical_cores: int
    available_memory: int
    memory_limit: int | None
    start_method: str
    free_threaded: bool
    costs: MachineCosts

    def describe(self) -> str:
        """One line for humans, e.g. ``2 usable cores (2 physical, 2 logical), 22.9 GiB free, fork``."""
        return (
            f"{self.usable_cores} usable cores ({self.physical_cores} physical, "
            f"{self.logical_cores} logical), {self.available_memory / 2**30:.1f} GiB available, "
            f"start method {self.start_method}, costs {self.costs.source}"
        )


@dataclass(frozen=True)
class Candidate:
    """One way to run: which executor, how many workers, how many items per chunk."""

    executor: ExecutorKind
    n_jobs: int
    chunksize: int

    def __str__(self) -> str:
        if self.executor == "serial":
            return "serial"
        return f"{self.executor} × {self.n_jobs}, chunks of {self.chunksize}"


@dataclass(frozen=True)
class Prediction:
    """Predicted wall time of one candidate, and where the time goes (seconds).

    ``total == startup + dispatch + transfer + compute + imbalance``.
    """

    candidate: Candidate
    startup: float
    dispatch: float
    transfer: float
    compute: float
    imbalance: float

    @property
    def total(self) -> float:
        """Predicted wall time, seconds."""
        return self.startup + self.dispatch + self.transfer + self.compute + self.imbalance

    def breakdown(self) -> Mapping[str, float]:
        """The five parts by name, in a fixed order."""
        return {
            "startup": self.startup,
            "dispatch": self.dispatch,
            "transfer": self.transfer,
            "compute": self.compute,
            "imbalance": self.imbalance,
        }


@dataclass(frozen=True)
class PlanOptions:
    """The user's knobs that shape the planner's search.

    Attributes:
        target_chunk_duration: seconds one chunk should take; the upper end of chunk sizes tried.
        n_items: how many items remain to run (after the dry run); None when unknown (a stream).
        max_workers: upper bound on workers for any executor (None: decided from the machine).
        executor: force one executor kind (None: choose).
        n_jobs: force a worker count (None: search).
        chunksize: force a chunk size (None: search).
        min_speedup: predicted speedup a parallel plan must reach over serial to be recommended;
            below it the plan stays serial (the gain would be within measurement noise).
        warm_workers: workers of each kind already running in reusable pools (their start-up is paid).
        assumed_stream_items: how many items to plan for when ``n_items`` is None.
    """

    target_chunk_duration: float = 0.2
    n_items: int | None = None
    max_workers: int | None = None
    executor: ExecutorKind | None = None
    n_jobs: int | None = None
    chunksize: int | None = None
    min_speedup: float = 1.2
    warm_workers: Mapping[str, int] = field(default_factory=dict)
    assumed_stream_items: int = 10_000


@dataclass(frozen=True)
class Plan:
    """The planner's answer.

    Attributes:
        candidate: the chosen way to run.
        prediction: its predicted time and breakdown.
        serial: the predicted time of running serially, for comparison.
        alternatives: the best prediction of each other executor kind considered (and a few
            neighbouring worker counts), cheapest first.
        reasons: short sentences saying why this plan was chosen.
        warnings: things the user should know (memory ceiling hit, unpicklable function, …).
    """

    candidate: Candidate
    prediction: Prediction
    serial: Prediction
    alternatives: tuple[Prediction, ...] = ()
    reasons: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def estimated_speedup(self) -> float:
        """Predicted serial time over predicted time of the chosen plan (1.0 for serial)."""
        total = self.prediction.total
        if total <= 0 or not math.isfinite(total):
            return 1.0
        return self.serial.total / total
