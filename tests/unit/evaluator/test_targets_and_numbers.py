"""Evaluation targets (Keptn's ``<N``/``>N`` plus klt's extension) and Go-compatible numbers."""

from __future__ import annotations

import math
import operator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from klt_common.structs.api.enums import KeptnState
from klt_common.structs.api.lifecycle import EvaluationStatusItem, KeptnEvaluationStatus
from klt_evaluator.evaluations import conclude, judge, summary
from klt_evaluator.numbers import format_fixed6, format_g5, format_plain, parse_number
from klt_evaluator.targets import TargetError, parse_target

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
OPS = {"<": operator.lt, ">": operator.gt, "<=": operator.le, ">=": operator.ge}
OPS |= {"==": operator.eq, "!=": operator.ne}


# --- targets -----------------------------------------------------------------------------------


@given(value=finite, bound=finite, op=st.sampled_from(sorted(OPS)), pad=st.sampled_from(["", " "]))
def test_a_comparison_target_holds_exactly_when_the_comparison_does(
    value: float, bound: float, op: str, pad: str
) -> None:
    target = parse_target(f"{pad}{op}{pad}{bound!r}{pad}")
    assert target.holds(value) is OPS[op](value, bound)


@given(value=finite, a=finite, b=finite)
def test_a_range_target_includes_both_ends(value: float, a: float, b: float) -> None:
    low, high = min(a, b), max(a, b)
    target = parse_target(f"{low!r}..{high!r}")
    assert target.holds(value) is (low <= value <= high)
    assert target.holds(low)
    assert target.holds(high)


@given(op=st.sampled_from(sorted(OPS)), bound=finite)
def test_nan_never_meets_a_target(op: str, bound: float) -> None:
    assert not parse_target(f"{op}{bound!r}").holds(math.nan)


@pytest.mark.parametrize(
    ("text", "value", "holds"),
    [
        pytest.param("<10", 9.99, True, id="keptn-less"),
        pytest.param(">1", 1.0, False, id="keptn-greater-strict"),
        pytest.param(">-5", -4.0, True, id="negative-bound"),
        pytest.param("<1e3", 999.0, True, id="exponent"),
        pytest.param("<.5", 0.25, True, id="leading-dot"),
        pytest.param("<inf", 1e308, True, id="infinite-bound"),
        pytest.param("-1..1", 0.0, True, id="negative-range"),
        pytest.param("3..3", 3.0, True, id="point-range"),
    ],
)
def test_examples(text: str, value: float, holds: bool) -> None:
    assert parse_target(text).holds(value) is holds


@pytest.mark.parametrize(
    "text",
    [
        "",
        "10",
        "=10",
        "=>5",
        ">>1",
        "<",
        "< ten",
        ">nan",
        "5..1",
        "1..2..3",
        "in 1..5",
        "<0x10",
        "<1_0",
    ],
)
def test_malformed_targets_name_the_accepted_forms(text: str) -> None:
    with pytest.raises(TargetError, match="invalid evaluation target"):
        parse_target(text)


# --- judging objectives (the KeptnEvaluation rules) -------------------------------------------


def test_messages_are_keptns() -> None:
    assert judge("5", "<10") == EvaluationStatusItem(
        value="5", status=KeptnState.SUCCEEDED, message="value '5' met objective '<10'"
    )
    assert judge("50", "<10").message == "value '50' did not meet objective '<10'"
    assert judge("+Inf", ">1").message == "value '+Inf' is +Inf, not a finite number"
    assert judge("abc", ">1").message == "value 'abc' is not a number"
    assert judge("1", "1").status == KeptnState.FAILED


@given(
    retries=st.integers(min_value=0, max_value=20),
    done=st.integers(min_value=0, max_value=25),
    passed=st.booleans(),
)
def test_an_evaluation_fails_only_once_its_rounds_are_used_up(
    retries: int, done: int, passed: bool
) -> None:
    item = EvaluationStatusItem(
        value="1", status=KeptnState.SUCCEEDED if passed else KeptnState.FAILED
    )
    result = conclude(KeptnEvaluationStatus(retry_count=done), {"m": item}, retries)
    assert result.retry_count == done + 1
    if passed:
        assert result.state == KeptnState.SUCCEEDED
    elif done + 1 >= max(retries, 1):
        assert result.state == KeptnState.FAILED
    else:
        assert result.state == KeptnState.PROGRESSING


def test_an_evaluation_without_objectives_succeeds_and_summaries_read_well() -> None:
    assert conclude(KeptnEvaluationStatus(), {}, 3).state == KeptnState.SUCCEEDED
    failed = {"m": EvaluationStatusItem(value="2", status=KeptnState.FAILED, message="too high")}
    assert summary(KeptnState.FAILED, failed) == "retryCount exceeded; m: too high"


# --- numbers -----------------------------------------------------------------------------------


@given(finite)
def test_plain_format_round_trips_without_an_exponent(value: float) -> None:
    text = format_plain(value)
    assert "e" not in text.lower()
    assert parse_number(text) == value


@pytest.mark.parametrize(
    ("value", "plain", "fixed6", "g5"),
    [
        (1.0, "1", "1.000000", "1"),
        (1.5, "1.5", "1.500000", "1.5"),
        (1e6, "1000000", "1000000.000000", "1e+06"),
        (123456.0, "123456", "123456.000000", "1.2346e+05"),
        (0.00015, "0.00015", "0.000150", "0.00015"),
        (math.nan, "NaN", "NaN", "NaN"),
        (math.inf, "+Inf", "+Inf", "+Inf"),
        (-math.inf, "-Inf", "-Inf", "-Inf"),
    ],
)
def test_go_formats(value: float, plain: str, fixed6: str, g5: str) -> None:
    assert (format_plain(value), format_fixed6(value), format_g5(value)) == (plain, fixed6, g5)


@pytest.mark.parametrize("text", ["NaN", "nan", "+Inf", "-inf", "Infinity", " 2.5 ", "1e-3", ".5"])
def test_go_parse_float_spellings_are_read(text: str) -> None:
    expected = float(text)
    got = parse_number(text)
    assert got == expected or (math.isnan(got) and math.isnan(expected))


@pytest.mark.parametrize("text", ["", "0x10", "1_000", "five", "1.2.3", "--1"])
def test_what_go_rejects_is_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="not a number"):
        parse_number(text)
