"""The human report of a decision, rendered with rich: measured, machine, plan, breakdown, alternatives.

``rich`` is imported when a report is built, not with the package. Print one with
``rich.print(result)`` (results have ``__rich__``), or get the renderable from :func:`result_report`.

Example:
    >>> from amorsize import optimize
    >>> text = render_text(result_report(optimize(abs, range(1000), profile=True)), width=100)
    >>> "Amorsize plan" in text and "Measured" in text
    True
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from amorsize.core.types import Prediction
from amorsize.report.text import seconds, size

if TYPE_CHECKING:
    from rich.console import RenderableType
    from rich.table import Table

    from amorsize.results import Diagnostics, OptimizationResult, StreamingOptimizationResult

__all__ = ["breakdown_table", "render_text", "result_report", "tune_report", "validation_report"]

_PARTS = ("startup", "dispatch", "transfer", "compute", "imbalance")


def _key_values(title: str, rows: Sequence[tuple[str, str]]) -> Table:
    from rich import box
    from rich.table import Table

    table = Table(title=title, title_justify="left", title_style="bold", box=box.SIMPLE, show_header=False)
    table.add_column(style="cyan", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(key, value)
    return table


def _measured_rows(diagnostics: Diagnostics) -> list[tuple[str, str]]:
    p = diagnostics.profile
    spread = "uneven: load balancing matters" if p.is_heterogeneous else "even"
    if p.cpu_ratio < 0.5:
        kind = "mostly waiting (I/O-like)"
    elif p.cpu_ratio > 1.2:
        kind = "multi-threaded computing"
    else:
        kind = "computing"
    if p.gil_held is not None:
        gil = f"held {p.gil_held:.0%} of the time (canary thread)"
    elif p.thread_speedup is None:
        gil = "not probed"
    else:
        holds = "releases the GIL or waits" if p.releases_gil else "holds the GIL"
        gil = f"{p.thread_speedup:.2f}× on {p.probe_threads} threads ({holds})"
    total = "unknown (a stream)" if p.total_items is None else f"{p.total_items:,}"
    return [
        ("items", f"{p.n_sampled} timed of {total}, in {seconds(diagnostics.sampling_seconds)}"),
        (
            "per item",
            f"{seconds(p.mean_duration)} mean ({seconds(min(p.durations, default=0.0))} – "
            f"{seconds(p.max_duration)})",
        ),
        ("spread", f"CV {p.coefficient_of_variation:.2f} ({spread})"),
        ("CPU / wall", f"{p.cpu_ratio:.2f} ({kind})"),
        ("GIL probe", gil),
        (
            "payload",
            f"{size(p.mean_input_bytes)} in, {size(p.mean_output_bytes)} out per item "
            f"({p.pickle_method or 'not picklable'}; {seconds(p.mean_serialize_seconds)} to pickle)",
        ),
        ("memory", f"+{size(p.peak_memory_bytes)} peak per call"),
    ]


def _machine_rows(diagnostics: Diagnostics) -> list[tuple[str, str]]:
    m = diagnostics.machine
    c = m.costs
    limit = "no limit" if m.memory_limit is None else f"limit {size(m.memory_limit)}"
    return [
        ("cores", f"{m.usable_cores} usable ({m.physical_cores} physical, {m.logical_cores} logical)"),
        ("memory", f"{size(m.available_memory)} available ({limit})"),
        ("start method", m.start_method + (", free-threaded" if m.free_threaded else "")),
        (
            "costs",
            f"process start-up {seconds(c.process_startup)}, per task {seconds(c.process_task_overhead)}, "
            f"pipe {size(c.pipe_bandwidth)}/s; "
            f"thread per task {seconds(c.thread_task_overhead)} ({c.source})",
        ),
    ]


def _unit(largest: float) -> tuple[str, float]:
    """One unit for a whole table, so its numbers stay short: s, ms or µs by the largest value."""
    if largest >= 10:
        return "s", 1.0
    if largest >= 10e-3:
        return "ms", 1e3
    return "µs", 1e6


def _number(value: float, scale: float) -> str:
    scaled = value * scale
    if scaled == 0:
        return "–"
    if abs(scaled) >= 100:
        return f"{scaled:,.0f}"
    if abs(scaled) >= 10:
        return f"{scaled:.1f}"
    return f"{scaled:.3g}"


def breakdown_table(chosen: Prediction, serial: Prediction, alternatives: Sequence[Prediction]) -> Table:
    """The chosen plan, serial and the alternatives, with their predicted-time breakdown.

    Args:
        chosen: the chosen plan's prediction (marked ★).
        serial: the serial prediction (speedups are relative to it).
        alternatives: other candidates' predictions.

    Returns:
        A rich table (all times in one unit, named in the title).
    """
    from rich.table import Table

    rows: list[Prediction] = []
    for prediction in (chosen, serial, *alternatives):
        if prediction.candidate not in {p.candidate for p in rows}:
            rows.append(prediction)
    unit, scale = _unit(max(p.total for p in rows))
    table = Table(
        title=f"Predicted time ({unit}), and the main alternatives",
        box=None,
        header_style="bold underline",
        title_justify="left",
        title_style="bold",
        pad_edge=False,
        padding=(0, 0, 0, 2),
    )
    table.add_column("plan", min_width=12)
    table.add_column("total", justify="right", no_wrap=True)
    for part in _PARTS:
        table.add_column(part, justify="right", style="dim", no_wrap=True)
    table.add_column("speedup", justify="right", no_wrap=True)
    for prediction in rows:
        is_chosen = prediction is chosen
        speedup = serial.total / prediction.total if prediction.total > 0 else 1.0
        parts = prediction.breakdown()
        table.add_row(
            ("★ " if is_chosen else "  ") + str(prediction.candidate),
            _number(prediction.total, scale) if prediction.total else "0",
            *(_number(parts[name], scale) for name in _PARTS),
            f"{speedup:.2f}×",
            style="bold green" if is_chosen else None,
        )
    return table


def result_report(
    result: OptimizationResult | StreamingOptimizationResult,
    diagnostics: Diagnostics | None = None,
    *,
    measurements: bool = True,
) -> RenderableType:
    """The report of a decision as a rich renderable.

    Args:
        result: what ``optimize`` returned.
        diagnostics: the measurements behind it (default: the result's own, when it kept them).
        measurements: include what was measured and the machine (else only the plan, its predicted
            breakdown and the alternatives).

    Returns:
        A renderable: ``rich.print`` it or :func:`render_text` it.
    """
    from rich.console import Group
    from rich.padding import Padding
    from rich.text import Text

    if diagnostics is None:
        diagnostics = result._measurements()
    headline = Text.assemble(
        ("Amorsize plan: ", "bold"),
        (_plan_text(result), "bold green"),
        f" — predicted {result.estimated_speedup:.2f}× over serial",
    )
    serial_time = getattr(result, "predicted_serial_time", None)
    if serial_time is not None:
        headline.append(
            f" ({seconds(serial_time)} → {seconds(getattr(result, 'predicted_parallel_time', 0.0))})"
        )
    parts: list[RenderableType] = [
        headline,
        Padding(Text(f"Why: {result.reason}"), (0, 0, 0, 2), expand=False),
    ]
    if diagnostics is not None and measurements:
        parts.append(_key_values("Measured (dry run)", _measured_rows(diagnostics)))
        parts.append(_key_values("Machine", _machine_rows(diagnostics)))
    plan = diagnostics.plan if diagnostics is not None else getattr(result, "plan", None)
    if plan is not None and plan.serial.total > 0:
        parts.append(breakdown_table(plan.prediction, plan.serial, plan.alternatives))
    for warning in result.warnings:
        parts.append(Text.assemble(("warning: ", "bold yellow"), warning))
    return Group(*parts)


def _plan_text(result: Any) -> str:
    if result.executor == "serial":
        return "serial"
    return f"{result.executor} × {result.n_jobs}, chunks of {result.chunksize}"


def render_text(renderable: RenderableType, *, width: int = 100) -> str:
    """Render to plain text (no colours), e.g. for logs, tests or ``str()``.

    Args:
        renderable: anything rich can print.
        width: line width in characters.

    Returns:
        The text.
    """
    from rich.console import Console

    buffer = io.StringIO()
    Console(file=buffer, width=width, color_system=None, force_terminal=False, soft_wrap=False).print(
        renderable
    )
    return buffer.getvalue()


def validation_report(validation: Any) -> RenderableType:
    """A :class:`~amorsize.validation.ValidationResult` as a rich renderable: measured against predicted.

    Args:
        validation: what ``validate_optimization`` returned.

    Returns:
        A renderable.
    """
    from rich.console import Group
    from rich.text import Text

    accuracy = validation.accuracy_percent
    style = "green" if accuracy >= 80 else "yellow" if accuracy >= 60 else "red"
    headline = Text.assemble(
        ("Validation of ", "bold"),
        (_plan_text(validation.plan), "bold green"),
        f" over {validation.n_items:,} items: measured {validation.actual_speedup:.2f}×, "
        f"predicted {validation.predicted_speedup:.2f}× — ",
        (f"accuracy {accuracy:.0f}%", f"bold {style}"),
    )
    rows = [
        ("serial", f"{seconds(validation.serial_time)} measured"),
        (
            "with the plan",
            f"{seconds(validation.parallel_time)} measured = analysis {seconds(validation.analysis_seconds)}"
            f" + run {seconds(validation.run_seconds)}",
        ),
        (
            "the run",
            f"predicted {seconds(validation.predicted_seconds)}, measured {seconds(validation.run_seconds)} "
            f"({validation.run_error:+.0f}%)",
        ),
        (
            "speedup",
            f"measured {validation.actual_speedup:.2f}×, predicted {validation.predicted_speedup:.2f}×",
        ),
    ]
    parts: list[RenderableType] = [headline, _key_values("Measured against predicted", rows)]
    if validation.alternatives:
        from rich import box
        from rich.table import Table

        table = Table(title="Neighbours, measured (no analysis)", title_justify="left", box=box.SIMPLE_HEAD)
        table.add_column("plan")
        table.add_column("measured", justify="right")
        table.add_column("predicted", justify="right")
        for alt in validation.alternatives:
            predicted = "–" if alt.predicted_seconds is None else seconds(alt.predicted_seconds)
            table.add_row(str(alt), seconds(alt.seconds), predicted)
        parts.append(table)
    parts += [Text(f"• {line}") for line in validation.recommendations]
    return Group(*parts)


def tune_report(tuning: Any) -> RenderableType:
    """A :class:`~amorsize.tuning.TuneResult` as a rich renderable: the winner and every trial.

    Args:
        tuning: what ``tune`` returned.

    Returns:
        A renderable.
    """
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    headline = Text.assemble(
        ("Fastest measured: ", "bold"),
        (_plan_text(tuning), "bold green"),
        f" — {seconds(tuning.best_seconds)} over {tuning.n_items:,} items; the model's plan "
        f"{_plan_text(tuning.recommended)} took {seconds(tuning.recommended_seconds)} "
        f"({tuning.gain:.2f}× the best)",
    )
    table = Table(
        title=f"Trials (tuning took {seconds(tuning.elapsed_seconds)})",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    table.add_column("plan")
    table.add_column("measured (median)", justify="right")
    table.add_column("runs", justify="right")
    table.add_column("predicted", justify="right")
    best = (tuning.executor, tuning.n_jobs, tuning.chunksize)
    for row in tuning.table:
        if not row.seconds:
            continue
        measured = f"> {seconds(max(row.seconds))} (stopped)" if row.stopped else seconds(row.median)
        label = str(row.candidate) + (" (model's plan)" if row.recommended else "")
        is_best = (row.executor, row.n_jobs, row.chunksize) == best
        table.add_row(
            ("★ " if is_best else "  ") + label,
            measured,
            str(len(row.seconds)),
            seconds(row.predicted_seconds),
            style="bold green" if is_best else None,
        )
    skipped = sum(1 for row in tuning.table if not row.seconds)
    parts: list[RenderableType] = [headline, table]
    if skipped:
        parts.append(Text(f"{skipped} more candidates not measured (time budget)", style="dim"))
    return Group(*parts)
