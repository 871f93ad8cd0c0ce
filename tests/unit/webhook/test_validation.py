"""The validation rules Keptn's webhooks enforced, with messages that say what to fix.

Each rule is checked on the smallest object that breaks it, and on one that satisfies it; the
v1 fixtures all pass; and no input of any shape makes a validator raise.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from klt_webhook import validation

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "manifests" / "v1"


def _messages(kind: str, spec: Any) -> list[str]:
    return [str(v) for v in validation.validate(kind, {"kind": kind, "spec": spec})]


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_v1_fixture_is_valid(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        assert validation.validate(doc["kind"], doc) == []


# --- KeptnTaskDefinition -----------------------------------------------------------------------


@pytest.mark.parametrize("runtime", ["deno", "python", "container"])
def test_one_runtime_is_valid(runtime: str) -> None:
    assert _messages("KeptnTaskDefinition", {runtime: {"name": "x"}}) == []


@pytest.mark.parametrize("spec", [{}, {"deno": None}, {"retries": 3}, None])
def test_no_runtime_is_rejected_with_keptns_message(spec: Any) -> None:
    (message,) = _messages("KeptnTaskDefinition", spec)
    assert message.startswith(
        "spec: Forbidden! Either Container, Python, or Deno field must be defined"
    )
    assert "add spec.deno" in message


def test_two_runtimes_are_rejected_naming_both() -> None:
    (message,) = _messages("KeptnTaskDefinition", {"deno": {}, "container": {"name": "c"}})
    assert "Forbidden! Only one of Container, Python, or Deno field can be defined" in message
    assert "spec.container, spec.deno" in message
    assert "keep exactly one" in message


# --- KeptnMetric -------------------------------------------------------------------------------


def _metric(**range_: Any) -> dict[str, Any]:
    return {"provider": {"name": "p"}, "query": "q", "fetchIntervalSeconds": 5, "range": range_}


def test_a_metric_without_range_is_valid() -> None:
    assert _messages("KeptnMetric", {"provider": {"name": "p"}}) == []


def test_step_with_aggregation_is_valid() -> None:
    assert _messages("KeptnMetric", _metric(interval="5m", step="1m", aggregation="p95")) == []


@pytest.mark.parametrize(
    ("range_", "expected"),
    [
        pytest.param(
            {"interval": "5 minutes"},
            "spec.range.interval: Forbidden! The time interval cannot be parsed",
            id="interval",
        ),
        pytest.param(
            {"interval": "5m", "step": "1x", "aggregation": "max"},
            "spec.range.step: Forbidden! The time interval cannot be parsed",
            id="step",
        ),
        pytest.param(
            {"step": "1m"},
            "spec.range.aggregation: Forbidden! Aggregation field is required if defining the "
            "step field",
            id="step-without-aggregation",
        ),
        pytest.param(
            {"aggregation": "avg"},
            "spec.range.step: Forbidden! Step interval is required for the aggregation to work",
            id="aggregation-without-step",
        ),
        pytest.param(
            {"step": "1m", "aggregation": "p50"},
            "spec.range.aggregation: unsupported aggregation 'p50': use one of p90, p95, p99, "
            "max, min, avg, median",
            id="unknown-aggregation",
        ),
        pytest.param(
            {"storedResults": 256}, "spec.range.storedResults: must be between 0 and 255", id="256"
        ),
    ],
)
def test_metric_range_rules(range_: dict[str, Any], expected: str) -> None:
    messages = _messages("KeptnMetric", _metric(**range_))
    assert any(m.startswith(expected) for m in messages), messages


def test_stored_results_up_to_255_are_valid() -> None:
    assert _messages("KeptnMetric", _metric(storedResults=255)) == []


# --- Analysis ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "timeframe",
    [
        {"recent": "5m"},
        {"from": "2026-01-01T00:00:00Z", "to": "2026-01-01T00:05:00Z"},
        {"recent": "0s", "from": "2026-01-01T00:00:00Z", "to": "2026-01-01T00:05:00Z"},
    ],
)
def test_valid_timeframes(timeframe: dict[str, Any]) -> None:
    assert _messages("Analysis", {"timeframe": timeframe}) == []


@pytest.mark.parametrize(
    ("timeframe", "expected"),
    [
        pytest.param(
            {"recent": "5m", "from": "2026-01-01T00:00:00Z"},
            "the field 'recent' can not be used in conjunction with 'from'/'to'",
            id="recent-and-from",
        ),
        pytest.param(
            {"from": "2026-01-01T00:00:00Z"},
            "either 'recent' or both 'from' and 'to'  must be set",
            id="only-from",
        ),
        pytest.param({}, "either 'recent' or both", id="empty"),
        pytest.param(
            {"from": "2026-01-01T00:05:00Z", "to": "2026-01-01T00:05:00Z"},
            "value of 'to' must be a timestamp later than 'from'",
            id="to-not-after-from",
        ),
        pytest.param(
            {"from": "yesterday", "to": "2026-01-01T00:05:00Z"},
            "spec.timeframe.from: 'yesterday' is not an RFC 3339 timestamp",
            id="bad-time",
        ),
        pytest.param({"recent": "soon"}, "spec.timeframe.recent: Forbidden!", id="bad-recent"),
    ],
)
def test_invalid_timeframes(timeframe: dict[str, Any], expected: str) -> None:
    messages = _messages("Analysis", {"timeframe": timeframe})
    assert any(expected in m for m in messages), messages


# --- AnalysisDefinition ------------------------------------------------------------------------


def _definition(target: dict[str, Any], passing: int = 90, warning: int = 70) -> dict[str, Any]:
    return {
        "objectives": [{"analysisValueTemplateRef": {"name": "t"}, "target": target}],
        "totalScore": {"passPercentage": passing, "warningPercentage": warning},
    }


def test_a_definition_with_one_operator_per_block_is_valid() -> None:
    target = {
        "failure": {"greaterThan": {"fixedValue": "500m"}},
        "warning": {"inRange": {"lowBound": 1, "highBound": "2"}},
    }
    assert _messages("AnalysisDefinition", _definition(target)) == []


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        pytest.param(
            {"failure": {}},
            "spec.objectives[0].target.failure: Operator: no operator set",
            id="none",
        ),
        pytest.param(
            {"warning": {"lessThan": {"fixedValue": 1}, "equalTo": {"fixedValue": 2}}},
            "spec.objectives[0].target.warning: Operator: multiple operators can not be set: "
            "found lessThan, equalTo",
            id="two",
        ),
        pytest.param(
            {"failure": {"inRange": {"lowBound": "2", "highBound": "1500m"}}},
            "spec.objectives[0].target.failure.inRange: RangeValue: lower bound of the range "
            "needs to be smaller than higher bound",
            id="in-range-reversed",
        ),
        pytest.param(
            {"failure": {"notInRange": {"lowBound": 3, "highBound": 3}}},
            "RangeValue: lower bound",
            id="not-in-range-empty",
        ),
        pytest.param(
            {"failure": {"inRange": {"lowBound": "lots", "highBound": 3}}},
            "inRange.lowBound: must be a quantity",
            id="not-a-quantity",
        ),
    ],
)
def test_invalid_targets(target: dict[str, Any], expected: str) -> None:
    messages = _messages("AnalysisDefinition", _definition(target))
    assert any(m.startswith(expected) or expected in m for m in messages), messages


@pytest.mark.parametrize(("passing", "warning"), [(70, 70), (50, 80)])
def test_warning_must_be_below_pass(passing: int, warning: int) -> None:
    (message,) = _messages("AnalysisDefinition", _definition({}, passing, warning))
    assert message.startswith(
        "spec.totalScore: warn percentage score cannot be higher or equal than Pass percentage"
    )
    assert f"warningPercentage {warning} must be below passPercentage {passing}" in message


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (5, Decimal(5)),
        ("1.5", Decimal("1.5")),
        ("500m", Decimal("0.5")),
        ("2Ki", Decimal(2048)),
        ("1e3", Decimal(1000)),
        ("-3", Decimal(-3)),
        (".5", Decimal("0.5")),
    ],
)
def test_quantities_parse(text: Any, value: Decimal) -> None:
    assert validation.parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "1.2.3", "5 m", "1e", "Ki", True, None, float("nan")])
def test_non_quantities_are_rejected(text: Any) -> None:
    with pytest.raises((ValueError, TypeError)):
        validation.parse_quantity(text)


def test_describe_names_kind_object_and_every_violation() -> None:
    violations = [validation.Violation("spec.a", "one"), validation.Violation("spec.b", "two")]
    assert (
        validation.describe("KeptnMetric", "metrics.keptn.sh", "m", violations)
        == 'KeptnMetric.metrics.keptn.sh "m" is invalid: spec.a: one; spec.b: two'
    )


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "spec",
                    "deno",
                    "python",
                    "container",
                    "range",
                    "interval",
                    "step",
                    "aggregation",
                    "storedResults",
                    "timeframe",
                    "recent",
                    "from",
                    "to",
                    "objectives",
                    "target",
                    "failure",
                    "warning",
                    "inRange",
                    "notInRange",
                    "lowBound",
                    "highBound",
                    "lessThan",
                    "totalScore",
                    "passPercentage",
                    "warningPercentage",
                    "fixedValue",
                ]
            ),
            children,
            max_size=5,
        )
    ),
    max_leaves=25,
)


@given(st.sampled_from(sorted(validation.VALIDATORS)), _json)
def test_no_input_makes_a_validator_raise(kind: str, obj: Any) -> None:
    target = obj if isinstance(obj, dict) else {"spec": obj}
    for violation in validation.validate(kind, target):
        assert violation.path.startswith("spec")
        assert violation.message
