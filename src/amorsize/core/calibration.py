"""Correct this machine's cost figures from the history of its runs: predicted against measured.

Pure: the caller reads the rows (``Store.runs()``) and passes them in; nothing here reads a clock,
the disk or the store.

::

    history rows ──► observe(): one Observation per usable parallel run
                        │  measured overhead = wall − busy / workers  (time the workers stood idle)
                        │  predicted overhead = startup + dispatch + transfer + imbalance
                        ▼
    estimate_correction(): per executor family (processes, threads) and cost term (startup,
                        │  dispatch, transfer), from the runs where that term dominates the
                        │  predicted overhead: the median ratio that would have made each run's
                        │  overhead exact, clipped, then shrunk toward 1 when evidence is thin
                        ▼
    Correction ──► apply_correction(machine) ──► Machine whose MachineCosts carry the factors
              └──► correct_prediction(prediction) ──► the same factors on a Prediction's parts

Why idle time: the workers' busy time (the sum of the chunk durations they report) already holds
whatever slowed the items down in the workers (another program on the cores, a BLAS thread cap), so
``wall − busy / workers`` isolates what the machine costs are about — start-up, the parent's
per-chunk work, pickling and the pipe, and the uneven end of the run — from compute errors that no
machine figure can fix. That slowdown is still estimated (``compute`` factors, busy over the
predicted work) and shown, but :func:`apply_correction` does not apply it: it is not a machine cost.

A history row is usable when it is a completed parallel run that carries the predicted breakdown
(the extra fields :func:`prediction_fields` makes) and ``busy_seconds``, was not planned for a
stream of unknown length, and was not ``paced`` (by a circuit breaker or a rate limit). Other rows
are skipped, so old histories do no harm.

Example:
    >>> from amorsize.core.types import Candidate
    >>> rows = [
    ...     {"executor": "processes", "n_jobs": 2, "chunksize": 10, "n_items": 100, "status": "completed",
    ...      "measured_seconds": 0.60, "busy_seconds": 1.0, "predicted_seconds": 0.55,
    ...      **prediction_fields(Prediction(Candidate("processes", 2, 10), 0.05, 0.0, 0.0, 0.5, 0.0))}
    ... ] * 9
    >>> correction = estimate_correction(rows)
    >>> round(correction.factor("processes", "startup"), 2)  # 0.1 s idle where 0.05 s was predicted
    1.68
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from amorsize.core.types import Machine, Prediction

__all__ = [
    "DOMINANT_SHARE",
    "MAX_FACTOR",
    "MIN_TERM_SECONDS",
    "PRIOR_RUNS",
    "RATIO_CLIP",
    "Correction",
    "Observation",
    "apply_correction",
    "correct_prediction",
    "correction_from_json",
    "correction_to_json",
    "estimate_correction",
    "observe",
    "prediction_fields",
]

Family = Literal["processes", "threads"]
Term = Literal["startup", "dispatch", "transfer", "compute"]

FAMILIES: tuple[Family, ...] = ("processes", "threads")
#: The terms :func:`apply_correction` turns into machine costs (``compute`` is reported only).
COST_TERMS: tuple[Term, ...] = ("startup", "dispatch", "transfer")

_PARTS = ("startup", "dispatch", "transfer", "compute", "imbalance")
#: History extra fields holding the predicted breakdown (see :func:`prediction_fields`).
PART_KEYS: Mapping[str, str] = {part: f"predicted_{part}" for part in _PARTS}
SERIAL_KEY = "predicted_serial_seconds"
PLANNED_KEY = "planned_items"

#: A run informs the factor of a term only when that term is at least this share of the run's
#: predicted overhead: the residual is then mostly that term's error, not another's.
DOMINANT_SHARE = 0.5

#: …and at least this many seconds: idle time is measured to a few milliseconds (thread wake-ups,
#: the runner's polling; on the 2-core dev VM the idle time of runs with 4 ms of predicted start-up
#: spread over 1–6 ms), so ratios of smaller terms are mostly noise.
MIN_TERM_SECONDS = 0.002

#: One run's ratio is clipped to [1/RATIO_CLIP, RATIO_CLIP] before the median: a single wild run
#: (a machine paused, a swap storm) then cannot drag the median beyond its place in the order.
RATIO_CLIP = 16.0

#: Shrinkage toward 1: with ``n`` runs the log-factor is ``median · n / (n + PRIOR_RUNS)``, i.e. the
#: calibrated figure counts as PRIOR_RUNS runs of evidence. 3 lets one run move the factor by a
#: quarter of its log-ratio and ten runs by three quarters.
PRIOR_RUNS = 3

#: Final factors stay within [1/MAX_FACTOR, MAX_FACTOR]: history corrects the calibration, it does not
#: replace it (a factor of 8 already turns a 4 ms start-up into 32 ms).
MAX_FACTOR = 8.0

_PROCESS_KINDS = ("processes", "dask")


def _family(executor: Any) -> Family | None:
    if executor in _PROCESS_KINDS:
        return "processes"
    if executor == "threads":
        return "threads"
    return None


def prediction_fields(
    prediction: Prediction, serial: Prediction | None = None, *, planned_items: int | None = -1
) -> dict[str, float | int | None]:
    """The extra fields a history record needs for calibration: the predicted breakdown.

    Args:
        prediction: the plan's prediction for the run (``Plan.prediction``).
        serial: the plan's serial prediction (``Plan.serial``), to estimate the compute slowdown too.
        planned_items: the item count the plan was made for (``PlanOptions.n_items``); None for a
            stream of unknown length, whose prediction is for an assumed count and is not used.
            Leave it out when unknown.

    Returns:
        ``{"predicted_startup": …, "predicted_dispatch": …, …}`` (and ``predicted_serial_seconds``,
        ``planned_items``).

    Example:
        >>> from amorsize.core.types import Candidate
        >>> p = Prediction(Candidate("threads", 4, 8), 0.001, 0.002, 0.0, 0.5, 0.01)
        >>> prediction_fields(p)["predicted_dispatch"]
        0.002
    """
    fields: dict[str, float | int | None] = {
        PART_KEYS[name]: float(value) for name, value in prediction.breakdown().items()
    }
    if serial is not None:
        fields[SERIAL_KEY] = float(serial.total)
    if planned_items != -1:
        fields[PLANNED_KEY] = planned_items
    return fields


@dataclass(frozen=True)
class Observation:
    """One usable history row, reduced to what the correction needs (seconds).

    Attributes:
        family: ``"processes"`` (also Dask) or ``"threads"``.
        measured_overhead: wall time minus busy time per working worker, ≥ 0.
        parts: the predicted breakdown, by name (startup, dispatch, transfer, compute, imbalance).
        busy: sum of the chunk durations the workers reported.
        predicted_work: predicted serial seconds of the items run, or None when not recorded.
    """

    family: Family
    measured_overhead: float
    parts: Mapping[str, float]
    busy: float
    predicted_work: float | None = None

    @property
    def predicted_overhead(self) -> float:
        """Predicted start-up, dispatch, transfer and imbalance, seconds."""
        return sum(self.parts[p] for p in _PARTS if p != "compute")


def _number(row: Mapping[str, Any], key: str) -> float | None:
    value = row.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) and value >= 0 else None


def _observe_one(row: Mapping[str, Any]) -> Observation | None:
    family = _family(row.get("executor"))
    if family is None or row.get("status", "completed") != "completed":
        return None
    if PLANNED_KEY in row and row[PLANNED_KEY] is None:
        return None  # a stream: the prediction was for an assumed length
    if row.get("paced"):
        return None  # a circuit breaker or rate limit set the pace: the wall time is not the machine's
    wall = _number(row, "measured_seconds")
    busy = _number(row, "busy_seconds")
    n_jobs = _number(row, "n_jobs")
    parts = {name: _number(row, key) for name, key in PART_KEYS.items()}
    if wall is None or busy is None or n_jobs is None or n_jobs < 1 or wall <= 0:
        return None
    if any(value is None for value in parts.values()):
        return None
    # workers that got a chunk: fewer than n_jobs when there were fewer chunks than workers
    working = n_jobs
    n_items, chunksize = _number(row, "n_items"), _number(row, "chunksize")
    if n_items is not None and chunksize is not None and chunksize >= 1:
        ran = max(0.0, n_items - (_number(row, "items_from_dry_run") or 0.0))
        working = max(1.0, min(n_jobs, math.ceil(ran / chunksize)))
    return Observation(
        family=family,
        measured_overhead=max(0.0, wall - busy / working),
        parts={name: value for name, value in parts.items() if value is not None},
        busy=busy,
        predicted_work=_number(row, SERIAL_KEY),
    )


def observe(rows: Iterable[Mapping[str, Any]]) -> list[Observation]:
    """The usable runs among history rows (see the module docstring for which are).

    Args:
        rows: ``Store.runs()`` rows (or any mappings with the same keys).

    Returns:
        One observation per usable row, in the rows' order.
    """
    return [obs for obs in map(_observe_one, rows) if obs is not None]


@dataclass(frozen=True)
class Correction:
    """Multiplicative corrections of the cost model's terms on one machine (1.0: no change).

    Attributes:
        factors: ``(family, term) → factor``; missing pairs are 1.0. Terms: ``startup``, ``dispatch``,
            ``transfer`` (applied by :func:`apply_correction`) and ``compute`` (the workers' slowdown
            against the dry run, reported but not a machine cost).
        evidence: ``(family, term) → runs`` the factor rests on.
        n_runs: usable runs seen.
    """

    factors: Mapping[tuple[str, str], float] = field(default_factory=dict)
    evidence: Mapping[tuple[str, str], int] = field(default_factory=dict)
    n_runs: int = 0

    def factor(self, family: str, term: str) -> float:
        """The factor of one term (``family`` may also be an executor kind: ``"dask"``, ``"serial"``)."""
        fam = _family(family) or family
        return self.factors.get((fam, term), 1.0)

    @property
    def is_identity(self) -> bool:
        """True when no cost term changes."""
        return all(self.factor(f, t) == 1.0 for f in FAMILIES for t in COST_TERMS)

    def __str__(self) -> str:
        if not self.factors:
            return f"no correction ({self.n_runs} usable runs)"
        shown = ", ".join(
            f"{family} {term} ×{factor:.2f} ({self.evidence.get((family, term), 0)} runs)"
            for (family, term), factor in sorted(self.factors.items())
        )
        return f"correction from {self.n_runs} runs: {shown}"


def _shrunk_median(ratios: list[float], prior_runs: float, max_factor: float) -> float:
    logs = [math.log(min(RATIO_CLIP, max(1.0 / RATIO_CLIP, r))) for r in ratios]
    n = len(logs)
    shrunk = statistics.median(logs) * n / (n + prior_runs)
    return min(max_factor, max(1.0 / max_factor, math.exp(shrunk)))


def estimate_correction(
    rows: Iterable[Mapping[str, Any]],
    *,
    prior_runs: float = PRIOR_RUNS,
    max_factor: float = MAX_FACTOR,
) -> Correction:
    """Per-machine factors for the model's start-up, dispatch and transfer costs, from run history.

    For each usable run (:func:`observe`) whose predicted overhead is dominated by one cost term ``X``
    (at least :data:`DOMINANT_SHARE` of it and :data:`MIN_TERM_SECONDS`), the ratio that would have
    made the run's overhead exact is ``(measured overhead − other predicted overheads) / X``. Per
    executor family and term: the median of those ratios (each clipped to :data:`RATIO_CLIP`), shrunk
    toward 1 by :data:`PRIOR_RUNS`, clipped to ``max_factor``.

    Args:
        rows: history rows of this machine, e.g. ``Store.runs(limit=200)``; order does not matter.
        prior_runs: runs' worth of trust in the calibrated figures (0: trust history alone).
        max_factor: bound on each factor, both ways (> 1).

    Returns:
        The correction; the identity when no row is usable.
    """
    observations = observe(rows)
    ratios: dict[tuple[str, str], list[float]] = {}
    for obs in observations:
        overhead = obs.predicted_overhead
        if overhead > 0:
            term = max(COST_TERMS, key=lambda t: obs.parts[t])
            size = obs.parts[term]
            if size >= MIN_TERM_SECONDS and size >= DOMINANT_SHARE * overhead:
                residual = obs.measured_overhead - (overhead - size)
                ratios.setdefault((obs.family, term), []).append(max(residual, 0.0) / size)
        if obs.predicted_work is not None and obs.predicted_work > 0 and obs.busy > 0:
            ratios.setdefault((obs.family, "compute"), []).append(obs.busy / obs.predicted_work)
    factors = {key: _shrunk_median(values, prior_runs, max_factor) for key, values in ratios.items()}
    evidence = {key: len(values) for key, values in ratios.items()}
    return Correction(factors=factors, evidence=evidence, n_runs=len(observations))


def correction_to_json(correction: Correction) -> dict[str, Any]:
    """``correction`` as JSON-ready data, for keeping it in the store (see :func:`correction_from_json`).

    Example:
        >>> c = Correction({("processes", "startup"): 1.5}, {("processes", "startup"): 9}, 9)
        >>> correction_from_json(correction_to_json(c)) == c
        True
    """
    return {
        "n_runs": correction.n_runs,
        "terms": [
            [family, term, factor, correction.evidence.get((family, term), 0)]
            for (family, term), factor in sorted(correction.factors.items())
        ],
    }


def correction_from_json(value: Any) -> Correction | None:
    """The correction :func:`correction_to_json` made; None for anything else (nothing is trusted).

    Args:
        value: decoded JSON, e.g. from ``Store.get``.

    Returns:
        The correction, or None when ``value`` is not one: unknown families or terms, factors that
        are not finite positive numbers, counts that are not non-negative integers.
    """
    if not isinstance(value, dict) or not isinstance(value.get("terms"), list):
        return None
    n_runs = value.get("n_runs")
    if not isinstance(n_runs, int) or not _count(n_runs):  # isinstance: for the type checker
        return None
    factors: dict[tuple[str, str], float] = {}
    evidence: dict[tuple[str, str], int] = {}
    for entry in value["terms"]:
        if not (isinstance(entry, list) and len(entry) == 4):
            return None
        family, term, factor, runs = entry
        if family not in FAMILIES or term not in (*COST_TERMS, "compute") or not _count(runs):
            return None
        if isinstance(factor, bool) or not isinstance(factor, (int, float)):
            return None
        if not (math.isfinite(factor) and factor > 0):
            return None
        factors[(family, term)] = float(factor)
        evidence[(family, term)] = runs
    return Correction(factors=factors, evidence=evidence, n_runs=n_runs)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def apply_correction(machine: Machine, correction: Correction) -> Machine:
    """``machine`` with its measured costs scaled by the correction's start-up, dispatch, transfer factors.

    Process start-up and per-chunk overhead are multiplied by their factors, the pipe bandwidth divided
    by the transfer factor (so only the byte part of the transfer term moves: the pickling time comes
    from the dry run, not the machine); likewise for threads' start-up and per-task overhead. The
    ``compute`` factor is not applied. The costs' ``source`` gains ``"+history"``.

    Args:
        machine: the probed machine.
        correction: from :func:`estimate_correction`.

    Returns:
        A new machine (``machine`` itself when the correction changes nothing).

    Example:
        >>> from amorsize.core.types import MachineCosts
        >>> m = Machine(2, 2, 2, 2**33, None, "fork", False, MachineCosts.fallback("fork"))
        >>> c = Correction(factors={("processes", "startup"): 2.0})
        >>> apply_correction(m, c).costs.process_startup
        0.1
    """
    if correction.is_identity:
        return machine
    costs = machine.costs
    new_costs = replace(
        costs,
        process_startup=costs.process_startup * correction.factor("processes", "startup"),
        process_task_overhead=costs.process_task_overhead * correction.factor("processes", "dispatch"),
        pipe_bandwidth=costs.pipe_bandwidth / correction.factor("processes", "transfer"),
        thread_startup=costs.thread_startup * correction.factor("threads", "startup"),
        thread_task_overhead=costs.thread_task_overhead * correction.factor("threads", "dispatch"),
        source=costs.source if costs.source.endswith("+history") else f"{costs.source}+history",
    )
    return replace(machine, costs=new_costs)


def correct_prediction(
    prediction: Prediction, correction: Correction, *, compute: bool = False
) -> Prediction:
    """A prediction with its start-up, dispatch and transfer parts scaled by the correction.

    The same as predicting again with :func:`apply_correction`'s machine for start-up and dispatch
    (they are proportional to those costs); for transfer it scales the pickling time too, so it moves
    at least as far as the machine correction does.

    Args:
        prediction: a prediction made with the uncorrected machine.
        correction: the correction.
        compute: also scale the compute and imbalance parts by the ``compute`` factor.

    Returns:
        The corrected prediction (a serial one is returned unchanged).

    Example:
        >>> from amorsize.core.types import Candidate
        >>> p = Prediction(Candidate("processes", 2, 5), 0.01, 0.0, 0.0, 1.0, 0.0)
        >>> correct_prediction(p, Correction(factors={("processes", "startup"): 3.0})).total
        1.03
    """
    family = _family(prediction.candidate.executor)
    if family is None:
        return prediction
    scale = {term: correction.factor(family, term) for term in (*COST_TERMS, "compute")}
    work = scale["compute"] if compute else 1.0
    return Prediction(
        prediction.candidate,
        startup=prediction.startup * scale["startup"],
        dispatch=prediction.dispatch * scale["dispatch"],
        transfer=prediction.transfer * scale["transfer"],
        compute=prediction.compute * work,
        imbalance=prediction.imbalance * work,
    )
