"""Plain-text explanations of a decision: what was measured, what was chosen, why."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from amorsize.results import Diagnostics, OptimizationResult, StreamingOptimizationResult


def seconds(value: float) -> str:
    """Format seconds with a unit that keeps 3 significant digits (``1.23 ms``, ``4.5 µs``)."""
    magnitude = abs(value)
    if magnitude >= 1 or magnitude == 0:
        return f"{value:.3g} s"
    if magnitude >= 1e-3:
        return f"{value * 1e3:.3g} ms"
    return f"{value * 1e6:.3g} µs"


def size(value: float) -> str:
    """Format a byte count (``512 B``, ``1.5 KiB``, ``3.2 MiB``)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def explain(result: OptimizationResult | StreamingOptimizationResult, diagnostics: Diagnostics) -> str:
    """A short human explanation: measured, machine, chosen plan, breakdown, alternatives, warnings.

    Args:
        result: what optimize returned.
        diagnostics: the measurements and plan behind it.

    Returns:
        Several lines of text, no trailing newline.
    """
    profile = diagnostics.profile
    plan = diagnostics.plan
    probe = "not probed"
    if profile.gil_held is not None:
        probe = f"GIL held {profile.gil_held:.0%} of the time"
    elif profile.thread_speedup is not None:
        probe = f"{profile.thread_speedup:.2f}x on {profile.probe_threads} threads"
    lines = [
        "Amorsize analysis",
        f"  measured   {profile.n_sampled} items timed in {seconds(diagnostics.sampling_seconds)}: "
        f"mean {seconds(profile.mean_duration)}, CV {profile.coefficient_of_variation:.2f}, "
        f"CPU/wall {profile.cpu_ratio:.2f}, GIL probe {probe}",
        f"             pickled {size(profile.mean_input_bytes)} in / {size(profile.mean_output_bytes)} out "
        f"per item, peak memory +{size(profile.peak_memory_bytes)}",
        f"  machine    {diagnostics.machine.describe()}",
        f"  chosen     {plan.candidate} — predicted {seconds(plan.prediction.total)} "
        f"vs serial {seconds(plan.serial.total)} ({plan.estimated_speedup:.2f}x)",
    ]
    if plan.candidate.executor != "serial":
        parts = ", ".join(f"{name} {seconds(value)}" for name, value in plan.prediction.breakdown().items())
        lines.append(f"  breakdown  {parts}")
    for alternative in plan.alternatives[:4]:
        lines.append(f"  instead    {alternative.candidate}: predicted {seconds(alternative.total)}")
    lines.append(f"  why        {result.reason}")
    lines += [f"  warning    {warning}" for warning in result.warnings]
    return "\n".join(lines)
