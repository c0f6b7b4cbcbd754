"""Tests for amorsize.report.data: decisions as strict-JSON dicts."""

from __future__ import annotations

import dataclasses
import json
import math

from amorsize.report.data import finite, result_dict
from amorsize.results import Diagnostics, OptimizationResult

Decision = tuple[OptimizationResult, Diagnostics]


class TestResultDict:
    def test_the_plan_fields(self, cpu_decision: Decision) -> None:
        out = result_dict(cpu_decision[0])
        assert {"executor", "n_jobs", "chunksize", "estimated_speedup", "reason", "warnings"} <= set(out)
        assert {"predicted_serial_time", "predicted_parallel_time", "n_sampled"} <= set(out)
        assert "profile" not in out
        assert (out["executor"], out["n_jobs"]) == ("processes", 4)

    def test_with_diagnostics(self, cpu_decision: Decision) -> None:
        result, diagnostics = cpu_decision
        profile = result_dict(result, diagnostics)["profile"]
        assert set(profile) >= {"measured", "machine", "chosen", "serial", "breakdown", "alternatives"}
        assert list(profile["breakdown"]) == ["startup", "dispatch", "transfer", "compute", "imbalance"]
        assert profile["measured"]["n_sampled"] == 8
        assert profile["machine"]["usable_cores"] == 4
        assert profile["alternatives"] and "total" in profile["alternatives"][0]

    def test_is_strict_json_even_with_infinities(self, cpu_decision: Decision) -> None:
        result, diagnostics = cpu_decision
        broken = dataclasses.replace(result, estimated_speedup=math.inf, predicted_parallel_time=math.nan)
        out = result_dict(broken, diagnostics)
        json.dumps(out, allow_nan=False)
        assert out["estimated_speedup"] is None and out["predicted_parallel_time"] is None


def test_finite_rounds_to_significant_digits() -> None:
    assert finite(1.23456789) == 1.23457
    assert finite(None) is None and finite(math.nan) is None and finite(0) == 0.0
