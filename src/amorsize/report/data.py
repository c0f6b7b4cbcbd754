"""Decisions as plain JSON-ready dicts: the machine-readable report (``--json``, ``result.to_dict()``).

Every number is finite or None (JSON has no NaN or infinity); keys are stable and documented here:

- plan: ``executor``, ``n_jobs``, ``chunksize``, ``estimated_speedup``, ``predicted_serial_time``,
  ``predicted_parallel_time``, ``reason``, ``warnings``, ``n_sampled``.
- ``profile`` (with diagnostics): ``measured`` (per-item times, spread, sizes, memory), ``machine``,
  ``breakdown`` (the chosen plan's five parts), ``alternatives`` (each with its breakdown).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from amorsize.core.types import Machine, Prediction, Profile

if TYPE_CHECKING:
    from amorsize.results import Diagnostics, OptimizationResult, StreamingOptimizationResult

__all__ = [
    "diagnostics_dict",
    "finite",
    "machine_dict",
    "prediction_dict",
    "profile_dict",
    "result_dict",
    "tune_dict",
    "validation_dict",
]


def finite(value: float | int | None, digits: int = 6) -> float | None:
    """``value`` rounded to ``digits`` significant digits, or None when it is missing or not finite."""
    if value is None or isinstance(value, bool) or not math.isfinite(value):
        return None
    if value == 0:
        return 0.0
    return float(f"{value:.{digits}g}")


def prediction_dict(prediction: Prediction) -> dict[str, Any]:
    """A candidate and its predicted seconds: total and the five parts."""
    out: dict[str, Any] = {
        "executor": prediction.candidate.executor,
        "n_jobs": prediction.candidate.n_jobs,
        "chunksize": prediction.candidate.chunksize,
        "total": finite(prediction.total),
    }
    out.update({name: finite(value) for name, value in prediction.breakdown().items()})
    return out


def profile_dict(profile: Profile, sampling_seconds: float | None = None) -> dict[str, Any]:
    """What the dry run measured."""
    return {
        "n_sampled": profile.n_sampled,
        "total_items": profile.total_items,
        "mean_item_seconds": finite(profile.mean_duration),
        "min_item_seconds": finite(min(profile.durations, default=0.0)),
        "max_item_seconds": finite(profile.max_duration),
        "coefficient_of_variation": finite(profile.coefficient_of_variation, 3),
        "cpu_ratio": finite(profile.cpu_ratio, 3),
        "thread_speedup": finite(profile.thread_speedup, 3),
        "probe_threads": profile.probe_threads,
        "gil_held": finite(profile.gil_held, 3),
        "input_bytes": finite(profile.mean_input_bytes),
        "output_bytes": finite(profile.mean_output_bytes),
        "serialize_seconds": finite(profile.mean_serialize_seconds),
        "peak_memory_bytes": profile.peak_memory_bytes,
        "pickle_method": profile.pickle_method,
        "sampling_seconds": finite(sampling_seconds),
    }


def machine_dict(machine: Machine) -> dict[str, Any]:
    """The machine figures a plan used."""
    costs = machine.costs
    return {
        "usable_cores": machine.usable_cores,
        "physical_cores": machine.physical_cores,
        "logical_cores": machine.logical_cores,
        "available_memory": machine.available_memory,
        "memory_limit": machine.memory_limit,
        "start_method": machine.start_method,
        "free_threaded": machine.free_threaded,
        "costs": {
            "process_startup": finite(costs.process_startup),
            "process_task_overhead": finite(costs.process_task_overhead),
            "pipe_bandwidth": finite(costs.pipe_bandwidth),
            "thread_startup": finite(costs.thread_startup),
            "thread_task_overhead": finite(costs.thread_task_overhead),
            "source": costs.source,
        },
    }


def diagnostics_dict(diagnostics: Diagnostics) -> dict[str, Any]:
    """Everything behind a decision: measured, machine, the chosen breakdown and the alternatives."""
    plan = diagnostics.plan
    return {
        "measured": profile_dict(diagnostics.profile, diagnostics.sampling_seconds),
        "machine": machine_dict(diagnostics.machine),
        "planning_seconds": finite(diagnostics.planning_seconds),
        "chosen": prediction_dict(plan.prediction),
        "serial": prediction_dict(plan.serial),
        "breakdown": {name: finite(value) for name, value in plan.prediction.breakdown().items()},
        "alternatives": [prediction_dict(p) for p in plan.alternatives],
    }


def result_dict(
    result: OptimizationResult | StreamingOptimizationResult,
    diagnostics: Diagnostics | None = None,
) -> dict[str, Any]:
    """The recommendation as a dict; with ``diagnostics``, also a ``"profile"`` key.

    Args:
        result: what ``optimize`` or ``optimize_streaming`` returned.
        diagnostics: the measurements behind it, to include.

    Returns:
        A JSON-serialisable dict (``json.dumps(..., allow_nan=False)`` accepts it).
    """
    out: dict[str, Any] = {
        "executor": result.executor,
        "n_jobs": result.n_jobs,
        "chunksize": result.chunksize,
        "estimated_speedup": finite(result.estimated_speedup, 4),
        "reason": result.reason,
        "warnings": list(result.warnings),
    }
    serial_time = getattr(result, "predicted_serial_time", None)
    if serial_time is not None:
        out["predicted_serial_time"] = finite(serial_time)
        out["predicted_parallel_time"] = finite(getattr(result, "predicted_parallel_time", None))
        out["n_sampled"] = getattr(result, "n_sampled", None)
    use_ordered = getattr(result, "use_ordered", None)
    if use_ordered is not None:
        out["use_ordered"] = use_ordered
    if diagnostics is not None:
        out["profile"] = diagnostics_dict(diagnostics)
    return out


def validation_dict(validation: Any) -> dict[str, Any]:
    """A :class:`~amorsize.validation.ValidationResult` as a dict: measured, predicted, accuracy, the plan."""
    plan = validation.plan
    return {
        "serial_time": finite(validation.serial_time),
        "parallel_time": finite(validation.parallel_time),
        "actual_speedup": finite(validation.actual_speedup, 4),
        "predicted_speedup": finite(validation.predicted_speedup, 4),
        "accuracy_percent": finite(validation.accuracy_percent, 4),
        "error": finite(validation.error, 4),
        "n_items": validation.n_items,
        "analysis_seconds": finite(validation.analysis_seconds),
        "predicted_seconds": finite(validation.predicted_seconds),
        "run_seconds": finite(validation.run_seconds),
        "run_error": finite(validation.run_error, 4),
        "plan": result_dict(plan),
        "alternatives": [
            {
                "executor": alt.executor,
                "n_jobs": alt.n_jobs,
                "chunksize": alt.chunksize,
                "seconds": finite(alt.seconds),
                "predicted_seconds": finite(alt.predicted_seconds),
            }
            for alt in validation.alternatives
        ],
        "recommendations": list(validation.recommendations),
    }


def tune_dict(tuning: Any) -> dict[str, Any]:
    """A :class:`~amorsize.tuning.TuneResult` as a dict: the winner, the model's plan, every trial."""
    return {
        "executor": tuning.executor,
        "n_jobs": tuning.n_jobs,
        "chunksize": tuning.chunksize,
        "best_seconds": finite(tuning.best_seconds),
        "blas_threads": tuning.blas_threads,
        "recommended": result_dict(tuning.recommended),
        "recommended_seconds": finite(tuning.recommended_seconds),
        "gain": finite(tuning.gain, 4),
        "n_items": tuning.n_items,
        "elapsed_seconds": finite(tuning.elapsed_seconds),
        "table": [
            {
                "executor": row.executor,
                "n_jobs": row.n_jobs,
                "chunksize": row.chunksize,
                "predicted_seconds": finite(row.predicted_seconds),
                "seconds": [finite(s) for s in row.seconds],
                "median": finite(row.median),
                "stopped": row.stopped,
                "recommended": row.recommended,
            }
            for row in tuning.table
        ],
    }
