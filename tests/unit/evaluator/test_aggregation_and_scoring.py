"""Step aggregation and Analysis scoring: Keptn's rules, checked by example and by property."""

from __future__ import annotations

import math
import statistics
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from klt_common.structs.api.enums import Aggregation
from klt_common.structs.api.metrics import (
    AnalysisObjective,
    Operator,
    ProviderResult,
    TotalScore,
)
from klt_evaluator.aggregation import aggregate, percentile
from klt_evaluator.scoring import (
    objective_key,
    operator_holds,
    parse_quantity,
    score_analysis,
)

finite = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False)
samples = st.lists(finite, min_size=1, max_size=60)


# --- aggregation -------------------------------------------------------------------------------


@given(samples)
def test_aggregates_lie_within_the_samples(values: list[float]) -> None:
    low, high = min(values), max(values)
    for method in Aggregation:
        result = aggregate(values, method)
        assert low <= result <= high
    assert aggregate(values, "max") == high
    assert aggregate(values, "min") == low
    assert aggregate(values, "median") == pytest.approx(statistics.median(values))
    assert aggregate(values, "avg") == pytest.approx(math.fsum(values) / len(values))


@given(samples, st.sampled_from([90, 95, 99]))
def test_percentiles_are_nearest_rank_samples(values: list[float], p: int) -> None:
    result = percentile(values, p)
    assert result in values
    ordered = sorted(values)
    rank = math.ceil(len(values) * p / 100)
    assert result == ordered[rank - 1]
    # At least p % of the samples are <= the result.
    assert sum(v <= result for v in values) >= len(values) * p / 100


def test_percentile_examples() -> None:
    ten = [float(v) for v in range(10, 0, -1)]
    assert (percentile(ten, 90), percentile(ten, 95), percentile(ten, 99)) == (9.0, 10.0, 10.0)
    assert aggregate([1.0, 3.0, 2.0, 4.0], "median") == 2.5


def test_no_samples_is_an_error_not_zero() -> None:
    with pytest.raises(ValueError, match="no values in query result"):
        aggregate([], "avg")


# --- quantities and operators -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (5, 5.0),
        ("5", 5.0),
        ("500m", 0.5),
        ("1.5k", 1500.0),
        ("1Ki", 1024.0),
        ("2Gi", 2.0 * 2**30),
        ("2e3", 2000.0),
        ("-3", -3.0),
        ("0.1", 0.1),
        ("1E", 1e18),
    ],
)
def test_quantities(text: int | str, value: float) -> None:
    assert parse_quantity(text) == pytest.approx(value)


@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_integer_quantities_are_exact(n: int) -> None:
    assert parse_quantity(str(n)) == float(n) == parse_quantity(n)


@pytest.mark.parametrize("text", ["", "abc", "5 m", "1.2.3", "5mi"])
def test_malformed_quantities(text: str) -> None:
    with pytest.raises(ValueError, match="not a quantity"):
        parse_quantity(text)


@given(finite, finite, finite)
def test_operators(value: float, a: float, b: float) -> None:
    low, high = sorted((a, b))
    fixed = {"fixedValue": repr(a)}
    bound = parse_quantity(repr(a))
    lo, hi = parse_quantity(repr(low)), parse_quantity(repr(high))
    bounds = {"lowBound": repr(low), "highBound": repr(high)}
    cases = [
        ({"lessThan": fixed}, value < bound),
        ({"lessThanOrEqual": fixed}, value <= bound),
        ({"greaterThan": fixed}, value > bound),
        ({"greaterThanOrEqual": fixed}, value >= bound),
        ({"equalTo": fixed}, value == bound),
        ({"inRange": bounds}, lo <= value <= hi),
        ({"notInRange": bounds}, value < lo or value > hi),
    ]
    for spec, expected in cases:
        assert operator_holds(Operator.model_validate(spec), value) is expected
    assert operator_holds(Operator(), value) is False


# --- scoring -----------------------------------------------------------------------------------


def _objective(
    name: str, weight: int = 1, key: bool = False, failure: Any = None, warning: Any = None
) -> AnalysisObjective:
    target: dict[str, Any] = {}
    if failure is not None:
        target["failure"] = failure
    if warning is not None:
        target["warning"] = warning
    return AnalysisObjective.model_validate(
        {
            "analysisValueTemplateRef": {"name": name},
            "target": target,
            "weight": weight,
            "keyObjective": key,
        }
    )


def _values(**values: str) -> dict[str, ProviderResult]:
    return {name: ProviderResult(value=value) for name, value in values.items()}


def test_keptns_documented_example() -> None:
    # Keptn's docs: a failed objective scores 0, a warning half its weight, a pass all of it.
    objectives = [
        _objective("a", weight=2, failure={"greaterThan": {"fixedValue": 10}}),
        _objective(
            "b",
            failure={"greaterThan": {"fixedValue": 10}},
            warning={"greaterThan": {"fixedValue": 5}},
        ),
        _objective("c", failure={"lessThan": {"fixedValue": 1}}),
    ]
    result = score_analysis(
        objectives,
        _values(a="3", b="7", c="0"),
        TotalScore(pass_percentage=60, warning_percentage=40),
    )
    # 2 + 0.5 + 0 = 2.5 of 4 = 62.5 % >= 60 % -> pass.
    assert (result.total_score, result.maximum_score) == (2.5, 4.0)
    assert result.achieved_percentage == 62.5
    assert (result.passed, result.warning) == (True, False)


def test_missing_and_unusable_values_score_zero() -> None:
    objectives = [_objective("gone"), _objective("nan"), _objective("text"), _objective("ok")]
    values = _values(nan="NaN", text="high", ok="1")
    values["err"] = ProviderResult(err_msg="boom")
    result = score_analysis(
        objectives, values, TotalScore(pass_percentage=50, warning_percentage=0)
    )
    assert [o.score for o in result.objectives] == [0.0, 0.0, 0.0, 1.0]
    assert result.objectives[0].error == "required value 'gone' not available"
    assert result.objectives[1].error == "value NaN is not a finite number"
    # 1 of 4 = 25 %: below the 50 % to pass, above the 0 % to warn.
    assert (result.passed, result.warning) == (False, True)
    assert objective_key(objectives[0].analysis_value_template_ref) == "gone"


weights = st.integers(min_value=0, max_value=10)
verdicts = st.sampled_from(["pass", "warn", "fail", "missing"])
VALUE_FOR = {"pass": "1", "warn": "6", "fail": "20", "missing": None}


@given(
    st.lists(st.tuples(weights, st.booleans(), verdicts), min_size=0, max_size=8),
    st.integers(min_value=0, max_value=100),
    st.integers(min_value=0, max_value=100),
)
def test_scoring_invariants(specs: list[tuple[int, bool, str]], pass_at: int, warn_at: int) -> None:
    # Every objective has the same target: fail above 10, warn above 5; the value picks the verdict.
    objectives = [
        _objective(
            f"o{i}",
            weight=weight,
            key=key,
            failure={"greaterThan": {"fixedValue": 10}},
            warning={"greaterThan": {"fixedValue": 5}},
        )
        for i, (weight, key, _) in enumerate(specs)
    ]
    values = {
        f"o{i}": ProviderResult(value=VALUE_FOR[verdict])
        for i, (_, _, verdict) in enumerate(specs)
        if VALUE_FOR[verdict] is not None
    }
    result = score_analysis(
        objectives, values, TotalScore(pass_percentage=pass_at, warning_percentage=warn_at)
    )
    expected = {"pass": 1.0, "warn": 0.5, "fail": 0.0, "missing": 0.0}
    assert [o.score for o in result.objectives] == [w * expected[v] for w, _, v in specs]
    assert result.maximum_score == sum(w for w, _, _ in specs)
    assert 0 <= result.total_score <= result.maximum_score
    assert 0 <= result.achieved_percentage <= 100
    assert not (result.passed and result.warning)
    if any(key and o.score == 0 for (_, key, _), o in zip(specs, result.objectives, strict=True)):
        assert not result.passed
        assert not result.warning
    else:
        assert result.passed is (result.achieved_percentage >= pass_at)
        assert result.warning is (not result.passed and result.achieved_percentage >= warn_at)
