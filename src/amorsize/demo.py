"""``amorsize demo``: plan and run the built-in workloads, and compare with serial, measured."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from amorsize.api import execute
from amorsize.report.text import seconds
from amorsize.run.report import RunReport
from amorsize.workloads import WORKLOADS, Workload

__all__ = ["DemoRow", "run_demo"]


@dataclass(frozen=True)
class DemoRow:
    """One workload's outcome.

    Attributes:
        workload: the workload's name.
        plan: the plan Amorsize chose, e.g. ``"processes × 2, chunks of 40"``.
        serial_seconds: measured wall time of a plain ``[f(x) for x in data]``.
        amorsize_seconds: measured wall time of ``execute`` (dry run and planning included).
        predicted_seconds: the planner's prediction for the items left after the dry run.
    """

    workload: str
    plan: str
    serial_seconds: float
    amorsize_seconds: float
    predicted_seconds: float | None

    @property
    def speedup(self) -> float:
        """Serial time over Amorsize's time."""
        return self.serial_seconds / self.amorsize_seconds if self.amorsize_seconds > 0 else 0.0


def _run_one(workload: Workload) -> DemoRow:
    data = list(workload.make_data())
    began = time.perf_counter()
    expected = [workload.func(item) for item in data]
    serial = time.perf_counter() - began
    began = time.perf_counter()
    results, report = execute(workload.func, workload.make_data(), return_report=True)
    measured = time.perf_counter() - began
    if results != expected:
        raise AssertionError(f"workload {workload.name}: results differ from serial")  # pragma: no cover
    return DemoRow(workload.name, _plan_text(report), serial, measured, report.predicted_seconds)


def _plan_text(report: RunReport) -> str:
    if report.executor == "serial":
        return "serial"
    return f"{report.executor} × {report.n_workers}, chunks of {report.initial_chunksize}"


def run_demo(names: Sequence[str] = ()) -> list[DemoRow]:
    """Run the built-in workloads (all, or those named) serially and with ``execute``.

    Args:
        names: workload names to run; empty for all.

    Returns:
        One row per workload.
    """
    chosen = [w for w in WORKLOADS if not names or w.name in names]
    return [_run_one(workload) for workload in chosen]


def render(rows: Sequence[DemoRow]) -> str:
    """A plain table of the rows."""
    header = f"{'workload':<10} {'plan':<34} {'serial':>9} {'amorsize':>9} {'speedup':>8}"
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(
            f"{row.workload:<10} {row.plan:<34} {seconds(row.serial_seconds):>9} "
            f"{seconds(row.amorsize_seconds):>9} {row.speedup:>7.2f}x"
        )
    return "\n".join(lines)


__all__ += ["render"]
