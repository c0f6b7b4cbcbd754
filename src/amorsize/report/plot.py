"""Plots of a decision: predicted speedup against workers for a few chunk sizes, and where the time goes.

Two panels side by side::

    speedup ▲            ★ chosen              predicted seconds, stacked
            │      ___.-----  chunks of 24     chosen        ███▒▒░░░
            │   .-'  .------  chunks of 6      serial        █████████████
            │  /  .-'   ● measured             threads × 2   ██████████▒
          1 ┼─/────────── serial               …
            └──────────────► workers           startup dispatch transfer compute imbalance

:func:`plot_data` computes the numbers (pure: the cost model, no clock, no I/O); :func:`plot` draws
them with matplotlib, imported only then (the ``plot`` extra: ``pip install 'amorsize[plot]'``).
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from amorsize.core.model import Workload, predict_parts
from amorsize.core.planner import MAX_THREADS, THREADS_PER_CORE
from amorsize.core.types import Candidate, ExecutorKind, PlanOptions, Prediction
from amorsize.errors import ConfigurationError, MissingExtraError
from amorsize.report.text import seconds

if TYPE_CHECKING:
    from amorsize.results import Diagnostics

__all__ = ["MeasuredPoint", "PlotData", "SpeedupCurve", "plot", "plot_data", "supported_formats"]

#: Chunk-size curves drawn at most (the chosen size, a quarter and four times it, and 1).
MAX_CURVES = 4

#: Colours of the overhead parts of a prediction (matplotlib's default cycle, in the model's order).
#: Compute, the work itself, is written next to each bar rather than drawn: it dwarfs the rest.
PART_COLOURS = {
    "startup": "#1f77b4",
    "dispatch": "#ff7f0e",
    "transfer": "#2ca02c",
    "imbalance": "#d62728",
}


@dataclass(frozen=True)
class SpeedupCurve:
    """Predicted speedup over serial of one executor and chunk size, for several worker counts."""

    executor: ExecutorKind
    chunksize: int
    workers: tuple[int, ...]
    speedups: tuple[float, ...]


@dataclass(frozen=True)
class MeasuredPoint:
    """A measured speedup (e.g. from ``validate``) to show on the same axes as the predictions."""

    n_jobs: int
    speedup: float
    label: str = "measured"


@dataclass(frozen=True)
class PlotData:
    """The numbers behind the plot.

    Attributes:
        n_items: items the predictions are for (those left after the dry run, or all of them when
            the dry run did everything).
        curves: predicted speedup against workers, one per chunk size.
        chosen: the chosen plan's prediction (it is marked on the curves).
        chosen_speedup: its predicted speedup.
        bars: the chosen plan and the main parallel alternatives, for the overhead panel.
        measured: measured points to draw over the predictions.
    """

    n_items: int
    curves: tuple[SpeedupCurve, ...]
    chosen: Prediction
    chosen_speedup: float
    bars: tuple[Prediction, ...]
    measured: tuple[MeasuredPoint, ...] = ()


def _worker_grid(top: int) -> list[int]:
    """1‥8, then steps of about ×√2 up to ``top`` (inclusive)."""
    grid = list(range(1, min(8, top) + 1))
    value = 8.0
    while grid[-1] < top:
        value *= math.sqrt(2)
        grid.append(min(top, max(grid[-1] + 1, round(value))))
    return grid


def _planned_items(diagnostics: Diagnostics, workload: Workload) -> int:
    """How many items the plan was made for, read back from its serial prediction (n × mean)."""
    serial = diagnostics.plan.serial.total
    if serial > 0 and workload.mean_duration > 0:
        return max(1, round(serial / workload.mean_duration))
    total = diagnostics.profile.total_items
    return total if total else PlanOptions().assumed_stream_items


def _warm_workers(diagnostics: Diagnostics, workload: Workload, n_items: int) -> int:
    """Workers the planner counted as already running (start-up free), read back from its prediction."""
    chosen = diagnostics.plan.prediction
    candidate = chosen.candidate
    if candidate.executor == "serial":
        return 0
    machine = diagnostics.machine

    def startup(warm: int) -> float:
        return predict_parts(
            workload, machine, candidate.executor, candidate.n_jobs, candidate.chunksize, n_items, warm
        )[0]

    return min(range(candidate.n_jobs + 1), key=lambda warm: abs(startup(warm) - chosen.startup))


def _curve_base(diagnostics: Diagnostics) -> Candidate:
    """The parallel candidate whose executor and chunk size the curves follow."""
    plan = diagnostics.plan
    if plan.candidate.executor != "serial":
        return plan.candidate
    parallel = [p.candidate for p in plan.alternatives if p.candidate.executor != "serial"]
    if parallel:
        return parallel[0]
    kind: ExecutorKind = "processes" if diagnostics.profile.picklable else "threads"
    return Candidate(kind, 2, 1)


def plot_data(diagnostics: Diagnostics, *, measured: Sequence[MeasuredPoint] = ()) -> PlotData:
    """Predicted speedups for the plot (pure: the cost model only).

    Args:
        diagnostics: the measurements and plan of a decision.
        measured: measured points to carry along.

    Returns:
        The :class:`PlotData`.
    """
    plan = diagnostics.plan
    machine = diagnostics.machine
    workload = Workload.from_profile(diagnostics.profile, free_threaded=machine.free_threaded)
    n_items = _planned_items(diagnostics, workload)
    warm = _warm_workers(diagnostics, workload, n_items)
    base = _curve_base(diagnostics)
    serial = workload.mean_duration * n_items
    usable = max(1, machine.usable_cores)
    if base.executor == "threads":  # no further than the planner searches: beyond it the model is untested
        top = max(base.n_jobs, min(max(MAX_THREADS, THREADS_PER_CORE * usable), max(8, 2 * base.n_jobs)))
    else:  # processes: up to twice the usable cores, to show where more workers stop helping
        top = max(4, 2 * usable, base.n_jobs)
    sizes = sorted({1, max(1, base.chunksize // 4), base.chunksize, base.chunksize * 4})
    sizes = [s for s in sizes if s <= max(1, n_items)] or [1]
    if len(sizes) > MAX_CURVES:
        sizes = [s for s in sizes if s != 1][-MAX_CURVES:]
    grid = _worker_grid(top)
    curves = []
    for size in sizes:
        speedups = []
        for workers in grid:
            parts = predict_parts(workload, machine, base.executor, workers, size, n_items, warm)
            total = sum(parts)
            speedups.append(serial / total if total > 0 and serial > 0 else 1.0)
        curves.append(SpeedupCurve(base.executor, size, tuple(grid), tuple(speedups)))
    speedup = plan.estimated_speedup
    bars = tuple(
        p
        for p in (plan.prediction, *plan.alternatives)
        if (p.candidate.executor != "serial" and p.candidate != plan.candidate) or p is plan.prediction
    )[:5]
    return PlotData(n_items, tuple(curves), plan.prediction, speedup, bars, tuple(measured))


def supported_formats() -> frozenset[str]:
    """File extensions matplotlib can write here (``png``, ``svg``, ``pdf``, …), without the dot.

    Raises:
        MissingExtraError: matplotlib is not installed.
    """
    figure = _matplotlib_figure()()
    return frozenset(figure.canvas.get_supported_filetypes())


def _matplotlib_figure() -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise MissingExtraError("plotting", "plot", "matplotlib") from error
    return Figure


def plot(
    diagnostics: Diagnostics,
    path: str | os.PathLike[str] | None = None,
    *,
    measured: Sequence[MeasuredPoint] = (),
    title: str | None = None,
) -> Any:
    """Draw predicted speedup against workers (chosen point marked) and the predicted-time breakdown.

    Args:
        diagnostics: the measurements and plan of a decision.
        path: save the figure there (the extension picks the format: ``.png``, ``.svg``, ``.pdf``);
            None only returns it (a notebook shows it).
        measured: measured speedups to draw on the same axes (``validate``).
        title: the figure's title (default: the chosen plan).

    Returns:
        The ``matplotlib.figure.Figure``.

    Raises:
        MissingExtraError: matplotlib is not installed (``pip install 'amorsize[plot]'``).
        ConfigurationError: the figure cannot be written to ``path``.
    """
    figure_class = _matplotlib_figure()
    data = plot_data(diagnostics, measured=measured)
    figure = figure_class(figsize=(12, 4.8), layout="constrained")
    left, right = figure.subplots(1, 2, gridspec_kw={"width_ratios": [1.15, 1]})
    _draw_speedups(left, data)
    _draw_breakdown(right, data)
    chosen = data.chosen.candidate
    figure.suptitle(
        title
        or f"Chosen: {chosen} — predicted {data.chosen_speedup:.2f}× over serial ({data.n_items:,} items)"
    )
    if path is not None:
        try:
            figure.savefig(os.fspath(path), dpi=120)
        except (OSError, ValueError) as error:
            raise ConfigurationError(f"cannot save the plot to {os.fspath(path)!r}: {error}") from error
    return figure


def _draw_speedups(axes: Any, data: PlotData) -> None:
    chosen = data.chosen.candidate
    top = max(curve.workers[-1] for curve in data.curves)
    axes.plot([1, top], [1, top], linestyle=":", color="#bbbbbb", label="ideal (linear)")
    axes.axhline(1.0, color="#888888", linewidth=1, label="serial")
    for curve in data.curves:
        is_chosen = chosen.executor == curve.executor and curve.chunksize == chosen.chunksize
        axes.plot(
            curve.workers,
            curve.speedups,
            marker=".",
            linewidth=2.4 if is_chosen else 1.4,
            label=f"{curve.executor}, chunks of {curve.chunksize}",
        )
    axes.plot(
        [chosen.n_jobs],
        [data.chosen_speedup],
        marker="*",
        markersize=18,
        color="gold",
        markeredgecolor="black",
        linestyle="none",
        label=f"chosen: {chosen}",
        zorder=5,
    )
    for point, marker in zip(data.measured, itertools.cycle(("o", "D", "s", "^")), strict=False):
        axes.plot(
            [point.n_jobs],
            [point.speedup],
            marker=marker,
            markersize=9,
            color="black",
            linestyle="none",
            label=f"{point.label}: {point.speedup:.2f}×",
            zorder=6,
        )
    if top > 16:
        axes.set_xscale("log", base=2)
    best = max(
        [data.chosen_speedup, *(max(c.speedups) for c in data.curves), *(p.speedup for p in data.measured)]
    )
    axes.set_ylim(0, max(2.0, best * 1.15))
    axes.set_xlim(left=0.9 if top > 16 else 0.5, right=top * (1.1 if top > 16 else 1.0) + 0.5)
    axes.set_xlabel("workers")
    axes.set_ylabel("predicted speedup over serial")
    axes.set_title("Predicted speedup")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="small", loc="best")


def _draw_breakdown(axes: Any, data: PlotData) -> None:
    bars = [p for p in data.bars if p.candidate.executor != "serial"]
    axes.set_title("Predicted overhead beyond the work itself")
    axes.set_xlabel("predicted seconds")
    if not bars:
        axes.text(0.5, 0.5, "serial: no overhead", ha="center", va="center", transform=axes.transAxes)
        axes.set_axis_off()
        return
    labels = [
        f"{p.candidate}{' (chosen)' if p is data.chosen else ''}\n"
        f"total {seconds(p.total)}, compute {seconds(p.compute)}"
        for p in bars
    ]
    positions = list(range(len(bars)))[::-1]
    lefts = [0.0] * len(bars)
    for part, colour in PART_COLOURS.items():
        widths = [p.breakdown()[part] for p in bars]
        axes.barh(positions, widths, left=lefts, color=colour, label=part, height=0.6)
        lefts = [a + b for a, b in zip(lefts, widths, strict=True)]
    for y, overhead in zip(positions, lefts, strict=True):
        axes.text(overhead, y, f" {seconds(overhead)}", va="center", fontsize="small")
    axes.set_yticks(positions, labels, fontsize="small")
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(nbins=4))
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: seconds(value)))
    axes.set_xlim(0, (max(lefts) or 1e-3) * 1.3)
    axes.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=len(PART_COLOURS))
    axes.grid(True, axis="x", alpha=0.3)
