"""The history correction: pure functions tested on synthetic histories with known true costs."""

from __future__ import annotations

import doctest
import math
import random
import statistics
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amorsize.core import calibration
from amorsize.core.calibration import (
    MAX_FACTOR,
    Correction,
    apply_correction,
    correct_prediction,
    estimate_correction,
    observe,
    prediction_fields,
)
from amorsize.core.model import predict
from amorsize.core.types import Candidate, Machine, MachineCosts, Prediction, Profile


def _machine(**costs: float) -> Machine:
    base = MachineCosts(
        process_startup=0.004,
        process_task_overhead=30e-6,
        pipe_bandwidth=1e9,
        thread_startup=100e-6,
        thread_task_overhead=10e-6,
        source="measured",
    )
    fields = {**base.__dict__, **costs}
    return Machine(2, 2, 2, 2**33, None, "fork", False, MachineCosts(**fields))


def _row(
    prediction: Prediction, measured: float, busy: float, n_items: int = 1000, **extra: Any
) -> dict[str, Any]:
    c = prediction.candidate
    return {
        "executor": c.executor,
        "n_jobs": c.n_jobs,
        "chunksize": c.chunksize,
        "n_items": n_items,
        "status": "completed",
        "predicted_seconds": prediction.total,
        "measured_seconds": measured,
        "busy_seconds": busy,
        **prediction_fields(prediction),
        **extra,
    }


def _history(
    true_factor: float, n_runs: int, *, seed: int = 0, outliers: float = 0.0, noise: float = 0.1
) -> list[dict[str, Any]]:
    """Process runs whose real start-up is ``true_factor`` × the predicted one, with noisy compute."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n_runs):
        startup = rng.uniform(0.005, 0.05)
        compute = rng.uniform(0.05, 0.5)
        prediction = Prediction(Candidate("processes", 2, 10), startup, 0.0005, 0.0002, compute, 0.001)
        real_compute = compute * rng.uniform(1.0, 1.0 + noise)  # the workers' time, as they report it
        measured = real_compute + true_factor * startup + 0.0007 + 0.001
        if rng.random() < outliers:
            measured *= rng.uniform(5, 50)  # a paused machine: wall time explodes, busy does not
        rows.append(_row(prediction, measured, busy=2 * real_compute, n_items=100))
    return rows


def _median_error(rows: list[dict[str, Any]], correction: Correction) -> float:
    errors: list[float] = []
    for row in rows:
        prediction = Prediction(
            Candidate(row["executor"], row["n_jobs"], row["chunksize"]),
            *(
                row[f"predicted_{part}"]
                for part in ("startup", "dispatch", "transfer", "compute", "imbalance")
            ),
        )
        total = correct_prediction(prediction, correction).total
        measured = float(row["measured_seconds"])
        errors.append(abs(total - measured) / measured)
    return statistics.median(errors)


class TestObserve:
    def test_keeps_completed_parallel_runs_with_a_breakdown(self) -> None:
        p = Prediction(Candidate("processes", 2, 10), 0.01, 0.0, 0.0, 0.5, 0.0)
        good = _row(p, measured=0.6, busy=1.0, n_items=100)
        rows = [
            good,
            {**good, "status": "failed"},
            {**good, "executor": "serial"},
            {**good, "busy_seconds": None},
            {**good, "measured_seconds": math.nan},
            {k: v for k, v in good.items() if k != "predicted_startup"},
            {"executor": "processes", "n_jobs": 2, "measured_seconds": 1.0},  # an old row: no breakdown
            {**good, "planned_items": None},  # a stream: predicted for an assumed length
            {**good, "paced": True},  # a rate limit set the pace
            {**good, "planned_items": 95},  # planned for the items it ran: kept
        ]
        observations = observe(rows)
        assert len(observations) == 2
        assert math.isclose(observations[0].measured_overhead, 0.6 - 1.0 / 2)

    def test_counts_only_the_workers_that_got_a_chunk(self) -> None:
        p = Prediction(Candidate("processes", 4, 10), 0.01, 0.0, 0.0, 0.5, 0.0)
        # 20 items left after the dry run, chunks of 10: two of the four workers had work
        row = _row(p, measured=0.6, busy=1.0, n_items=25, items_from_dry_run=5)
        assert math.isclose(observe([row])[0].measured_overhead, 0.6 - 1.0 / 2)

    def test_prediction_fields_round_trip(self) -> None:
        p = Prediction(Candidate("threads", 4, 8), 0.001, 0.002, 0.0, 0.5, 0.01)
        serial = Prediction(Candidate("serial", 1, 8), 0.0, 0.0, 0.0, 1.9, 0.0)
        fields = prediction_fields(p, serial, planned_items=None)
        assert fields["predicted_serial_seconds"] == 1.9 and fields["planned_items"] is None
        assert "planned_items" not in prediction_fields(p)
        row = {**_row(p, 0.6, 3.0), **prediction_fields(p, serial, planned_items=1000)}
        assert observe([row])[0].parts == p.breakdown()

    def test_dask_counts_as_processes(self) -> None:
        p = Prediction(Candidate("dask", 2, 10), 0.01, 0.0, 0.0, 0.5, 0.0)
        assert observe([_row(p, 0.6, 1.0)])[0].family == "processes"


class TestEstimateCorrection:
    def test_no_history_is_the_identity(self) -> None:
        correction = estimate_correction([])
        assert correction.is_identity
        assert correction.n_runs == 0
        assert correction.factor("processes", "startup") == 1.0

    def test_recovers_a_startup_three_times_the_calibrated_one(self) -> None:
        correction = estimate_correction(_history(3.0, 60), prior_runs=0)
        assert 2.5 < correction.factor("processes", "startup") < 3.6
        assert correction.factor("threads", "startup") == 1.0  # no thread runs: no evidence
        assert correction.evidence[("processes", "startup")] == 60

    def test_predictions_move_toward_measurements(self) -> None:
        past, future = _history(3.0, 30, seed=1), _history(3.0, 30, seed=2)
        correction = estimate_correction(past)
        assert _median_error(future, correction) < 0.5 * _median_error(future, Correction())

    def test_outliers_do_not_wreck_it(self) -> None:
        clean = estimate_correction(_history(3.0, 60, seed=3), prior_runs=0).factor("processes", "startup")
        dirty = estimate_correction(_history(3.0, 60, seed=3, outliers=0.25), prior_runs=0)
        factor = dirty.factor("processes", "startup")
        assert 2.0 < factor < 5.0
        assert abs(math.log(factor / clean)) < math.log(1.7)

    def test_few_runs_move_the_factor_only_part_of_the_way(self) -> None:
        one = estimate_correction(_history(4.0, 1, noise=0.0))
        many = estimate_correction(_history(4.0, 40, noise=0.0))
        assert 1.0 < one.factor("processes", "startup") < many.factor("processes", "startup") <= 4.0 * 1.05

    def test_a_faster_machine_gets_factors_below_one(self) -> None:
        correction = estimate_correction(_history(0.25, 40, noise=0.0))
        assert correction.factor("processes", "startup") < 0.4

    def test_terms_too_small_to_measure_are_left_alone(self) -> None:
        p = Prediction(Candidate("threads", 8, 10), 0.0008, 0.0001, 0.0, 0.5, 0.0)
        rows = [_row(p, measured=0.6, busy=8 * 0.5)] * 20  # 0.1 s idle, but the term is 0.8 ms
        assert estimate_correction(rows).factor("threads", "startup") == 1.0

    def test_dispatch_is_attributed_where_it_dominates(self) -> None:
        p = Prediction(Candidate("processes", 2, 1), 0.001, 0.05, 0.0, 0.5, 0.0)
        rows = [_row(p, measured=0.5 + 0.001 + 0.01, busy=1.0, n_items=1000)] * 20  # dispatch overlapped
        correction = estimate_correction(rows)
        assert correction.factor("processes", "dispatch") < 0.4
        assert correction.factor("processes", "startup") == 1.0

    def test_compute_slowdown_is_reported(self) -> None:
        p = Prediction(Candidate("processes", 2, 10), 0.01, 0.0, 0.0, 0.5, 0.0)
        serial = Prediction(Candidate("serial", 1, 10), 0.0, 0.0, 0.0, 1.0, 0.0)
        row = {**_row(p, measured=0.8, busy=1.5), **prediction_fields(p, serial)}
        correction = estimate_correction([row] * 30, prior_runs=0)
        assert math.isclose(correction.factor("processes", "compute"), 1.5)

    @settings(max_examples=60, deadline=None)
    @given(
        st.lists(
            st.tuples(
                st.floats(0, 10),  # measured
                st.floats(0, 20),  # busy
                st.floats(0, 1),  # startup
                st.floats(0, 1),  # dispatch
                st.floats(0, 1),  # transfer
                st.floats(0, 10),  # compute
                st.integers(1, 64),  # workers
                st.sampled_from(["processes", "threads", "serial", "dask"]),
            ),
            max_size=30,
        )
    )
    def test_factors_stay_bounded_and_finite(self, runs: list[tuple[Any, ...]]) -> None:
        rows = [
            _row(Prediction(Candidate(kind, n, 1), s, d, t, c, 0.0), measured=m, busy=b)
            for m, b, s, d, t, c, n, kind in runs
        ]
        correction = estimate_correction(rows)
        for factor in correction.factors.values():
            assert math.isfinite(factor)
            assert 1 / MAX_FACTOR <= factor <= MAX_FACTOR
        machine = apply_correction(_machine(), correction)
        assert all(
            math.isfinite(getattr(machine.costs, name)) and getattr(machine.costs, name) > 0
            for name in ("process_startup", "process_task_overhead", "pipe_bandwidth", "thread_startup")
        )


class TestApplyCorrection:
    def test_scales_the_costs(self) -> None:
        correction = Correction(
            factors={
                ("processes", "startup"): 2.0,
                ("processes", "dispatch"): 0.5,
                ("processes", "transfer"): 4.0,
                ("threads", "startup"): 0.1,
                ("threads", "dispatch"): 3.0,
                ("processes", "compute"): 1.7,  # reported, never applied
            }
        )
        machine = _machine()
        corrected = apply_correction(machine, correction).costs
        assert math.isclose(corrected.process_startup, 0.008)
        assert math.isclose(corrected.process_task_overhead, 15e-6)
        assert math.isclose(corrected.pipe_bandwidth, 0.25e9)
        assert math.isclose(corrected.thread_startup, 10e-6)
        assert math.isclose(corrected.thread_task_overhead, 30e-6)
        assert corrected.source == "measured+history"
        assert apply_correction(apply_correction(machine, correction), correction).costs.source == (
            "measured+history"
        )

    def test_identity_returns_the_same_machine(self) -> None:
        machine = _machine()
        assert apply_correction(machine, Correction()) is machine

    def test_agrees_with_correct_prediction_on_startup_and_dispatch(self) -> None:
        profile = Profile((0.001,) * 5, (0.001,) * 5, (100,) * 5, (100,) * 5, (0.0,) * 5, thread_speedup=1.0)
        correction = Correction(factors={("processes", "startup"): 3.0, ("processes", "dispatch"): 0.5})
        machine = _machine()
        candidate = Candidate("processes", 2, 7)
        again = predict(profile, apply_correction(machine, correction), candidate, 1000)
        scaled = correct_prediction(predict(profile, machine, candidate, 1000), correction)
        assert math.isclose(again.startup, scaled.startup)
        assert math.isclose(again.dispatch, scaled.dispatch)
        assert math.isclose(again.total, scaled.total)


class TestCorrectPrediction:
    def test_serial_is_unchanged(self) -> None:
        p = Prediction(Candidate("serial", 1, 1), 0.0, 0.0, 0.0, 1.0, 0.0)
        assert correct_prediction(p, Correction(factors={("processes", "startup"): 3.0})) == p

    def test_compute_factor_only_on_request(self) -> None:
        p = Prediction(Candidate("processes", 2, 5), 0.0, 0.0, 0.0, 1.0, 0.1)
        correction = Correction(factors={("processes", "compute"): 1.5})
        assert correct_prediction(p, correction).total == p.total
        assert math.isclose(correct_prediction(p, correction, compute=True).total, 1.65)


def test_str_names_the_factors() -> None:
    text = str(estimate_correction(_history(3.0, 10)))
    assert "processes startup ×" in text and "10 runs" in text
    assert "no correction" in str(Correction())


def test_doctests() -> None:
    assert doctest.testmod(calibration, raise_on_error=False).failed == 0


class TestKeepingACorrection:
    def test_round_trip(self) -> None:
        from amorsize.core.calibration import correction_from_json, correction_to_json

        c = Correction(
            {("processes", "startup"): 1.7, ("threads", "compute"): 0.9},
            {("processes", "startup"): 12, ("threads", "compute"): 4},
            16,
        )
        assert correction_from_json(correction_to_json(c)) == c

    @pytest.mark.parametrize(
        "value",
        [
            None,
            [],
            {"terms": []},
            {"n_runs": -1, "terms": []},
            {"n_runs": True, "terms": []},
            {"n_runs": 3, "terms": [["processes", "startup", 1.2]]},
            {"n_runs": 3, "terms": [["gpu", "startup", 1.2, 3]]},
            {"n_runs": 3, "terms": [["processes", "imbalance", 1.2, 3]]},
            {"n_runs": 3, "terms": [["processes", "startup", float("nan"), 3]]},
            {"n_runs": 3, "terms": [["processes", "startup", 0.0, 3]]},
            {"n_runs": 3, "terms": [["processes", "startup", "1.2", 3]]},
            {"n_runs": 3, "terms": [["processes", "startup", 1.2, -3]]},
        ],
    )
    def test_anything_else_is_refused(self, value: object) -> None:
        from amorsize.core.calibration import correction_from_json

        assert correction_from_json(value) is None
