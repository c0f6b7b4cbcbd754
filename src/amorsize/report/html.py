"""HTML tables for Jupyter (``_repr_html_``): the plan, what was measured, and the predicted breakdown.

Every piece of text is escaped; the output is a self-contained fragment with no scripts or styles
beyond a few inline attributes.

Example:
    >>> from amorsize import optimize
    >>> "<table" in optimize(abs, range(1000))._repr_html_()
    True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import TYPE_CHECKING, Any

from amorsize.report.text import seconds, size

if TYPE_CHECKING:
    from amorsize.results import Diagnostics, OptimizationResult, StreamingOptimizationResult

__all__ = ["key_value_table", "result_html", "validation_html"]

_PARTS = ("startup", "dispatch", "transfer", "compute", "imbalance")


def key_value_table(title: str, rows: Sequence[tuple[str, str]]) -> str:
    """A two-column table with a caption; keys and values are escaped.

    Args:
        title: the caption.
        rows: (key, value) pairs.

    Returns:
        An HTML fragment.
    """
    body = "".join(
        f'<tr><th style="text-align:left">{escape(key)}</th>'
        f'<td style="text-align:left">{escape(value)}</td></tr>'
        for key, value in rows
    )
    return f'<table><caption style="text-align:left"><b>{escape(title)}</b></caption>{body}</table>'


def _grid(title: str, header: Sequence[str], rows: Sequence[Sequence[str]], bold_first: bool) -> str:
    head = "".join(f"<th>{escape(cell)}</th>" for cell in header)
    lines = []
    for i, row in enumerate(rows):
        cells = "".join(f"<td>{escape(cell)}</td>" for cell in row)
        style = ' style="font-weight:bold"' if bold_first and i == 0 else ""
        lines.append(f"<tr{style}>{cells}</tr>")
    return (
        f'<table><caption style="text-align:left"><b>{escape(title)}</b></caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table>"
    )


def _breakdown(diagnostics: Diagnostics) -> str:
    plan = diagnostics.plan
    serial = plan.serial
    predictions = [plan.prediction]
    for p in (serial, *plan.alternatives):
        if p.candidate not in {q.candidate for q in predictions}:
            predictions.append(p)
    rows = []
    for i, p in enumerate(predictions):
        parts: Mapping[str, float] = p.breakdown()
        speedup = serial.total / p.total if p.total > 0 else 1.0
        rows.append(
            [("★ " if i == 0 else "") + str(p.candidate), seconds(p.total)]
            + [seconds(parts[name]) if parts[name] else "–" for name in _PARTS]
            + [f"{speedup:.2f}×"]
        )
    return _grid("Predicted time", ["plan", "total", *_PARTS, "speedup"], rows, bold_first=True)


def result_html(
    result: OptimizationResult | StreamingOptimizationResult, diagnostics: Diagnostics | None = None
) -> str:
    """The decision as HTML tables (what Jupyter shows for a result).

    Args:
        result: what ``optimize`` returned.
        diagnostics: the measurements behind it (default: the result's own, when it kept them).

    Returns:
        An HTML fragment.
    """
    if diagnostics is None:
        diagnostics = result._measurements()
    rows: list[tuple[str, str]] = [
        ("executor", result.executor),
        ("n_jobs", str(result.n_jobs)),
        ("chunksize", str(result.chunksize)),
        ("estimated speedup", f"{result.estimated_speedup:.2f}×"),
    ]
    serial_time: Any = getattr(result, "predicted_serial_time", None)
    if serial_time is not None:
        parallel_time: float = getattr(result, "predicted_parallel_time", 0.0)
        rows.append(("predicted time", f"{seconds(serial_time)} serial → {seconds(parallel_time)}"))
    rows.append(("reason", result.reason))
    rows += [("warning", warning) for warning in result.warnings]
    parts = [key_value_table("Amorsize recommendation", rows)]
    if diagnostics is not None:
        p = diagnostics.profile
        m = diagnostics.machine
        parts.append(
            key_value_table(
                "Measured (dry run)",
                [
                    ("items timed", str(p.n_sampled)),
                    ("per item", f"{seconds(p.mean_duration)} mean, CV {p.coefficient_of_variation:.2f}"),
                    ("CPU / wall", f"{p.cpu_ratio:.2f}"),
                    ("payload", f"{size(p.mean_input_bytes)} in, {size(p.mean_output_bytes)} out"),
                    ("memory", f"+{size(p.peak_memory_bytes)} peak per call"),
                    ("machine", m.describe()),
                ],
            )
        )
        parts.append(_breakdown(diagnostics))
    return '<div class="amorsize-result">' + "".join(parts) + "</div>"


def validation_html(validation: Any) -> str:
    """A :class:`~amorsize.validation.ValidationResult` as HTML tables (for its ``_repr_html_``).

    Args:
        validation: what ``validate_optimization`` returned.

    Returns:
        An HTML fragment: measured against predicted, the measured neighbours, the advice.
    """
    rows = [
        ("plan", str(validation.candidate) + f" ({validation.n_items} items)"),
        ("serial", f"{seconds(validation.serial_time)} measured"),
        (
            "with the plan",
            f"{seconds(validation.parallel_time)} measured (analysis {seconds(validation.analysis_seconds)} "
            f"+ run {seconds(validation.run_seconds)}; "
            f"run predicted {seconds(validation.predicted_seconds)})",
        ),
        (
            "speedup",
            f"measured {validation.actual_speedup:.2f}×, predicted {validation.predicted_speedup:.2f}×",
        ),
        ("accuracy", f"{validation.accuracy_percent:.0f}% (error {validation.error:+.0f}%)"),
    ]
    rows += [("advice", line) for line in validation.recommendations]
    parts = [key_value_table("Amorsize validation", rows)]
    if validation.alternatives:
        grid = [
            [
                str(alt),
                seconds(alt.seconds),
                "–" if alt.predicted_seconds is None else seconds(alt.predicted_seconds),
            ]
            for alt in validation.alternatives
        ]
        parts.append(_grid("Neighbours, measured", ["plan", "measured", "predicted"], grid, bold_first=False))
    return '<div class="amorsize-validation">' + "".join(parts) + "</div>"
