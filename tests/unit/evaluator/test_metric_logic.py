"""Pure parts of the KeptnMetric loop and the providers: queries, answers, status patches."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from klt_common.structs.api.metrics import KeptnMetricSpec
from klt_evaluator.metrics import (
    RAW_VALUE_LIMIT,
    FetchFailed,
    Outcome,
    build_query,
    finish,
    normalise_name,
    spread_delay,
    status_patch,
)
from klt_evaluator.providers import ProviderError, Query
from klt_evaluator.providers.elastic import extract
from klt_evaluator.providers.generic import select, split_query
from klt_evaluator.providers.prometheus import PrometheusProvider
from klt_evaluator.settings import EvaluatorGroup, EvaluatorSettings

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def spec(**range_: Any) -> KeptnMetricSpec:
    body: dict[str, Any] = {"provider": {"name": "p"}, "query": "q", "fetchIntervalSeconds": 10}
    if range_:
        body["range"] = range_
    return KeptnMetricSpec.model_validate(body)


def test_queries_follow_the_range() -> None:
    instant = build_query(spec(), NOW)
    assert (instant.start, instant.end, instant.series) == (None, NOW, False)
    ranged = build_query(spec(interval="5m"), NOW)
    assert (ranged.start, ranged.step, ranged.series) == (
        NOW - timedelta(minutes=5),
        timedelta(minutes=5),
        False,
    )
    stepped = build_query(spec(interval="1h", step="1m", aggregation="p95"), NOW)
    assert (stepped.step, stepped.step_text, stepped.series) == (timedelta(minutes=1), "1m", True)


@pytest.mark.parametrize(
    ("range_", "message"),
    [
        ({"interval": "5x"}, "range.interval '5x' is not a duration"),
        ({"interval": "5m", "step": "1m"}, "range.step requires range.aggregation"),
        ({"interval": "5m", "aggregation": "max"}, "range.aggregation requires range.step"),
        ({"interval": "5m", "step": "0s", "aggregation": "max"}, "must be positive"),
    ],
)
def test_bad_ranges_are_reported(range_: dict[str, Any], message: str) -> None:
    with pytest.raises(FetchFailed, match=message):
        build_query(spec(**range_), NOW)


def test_finishing_aggregates_steps_and_refuses_non_finite_values() -> None:
    assert finish(spec(), (2.5,), "2.5") == "2.5"
    assert finish(spec(interval="5m", step="1m", aggregation="avg"), (1.0, 2.0), "") == "1.5"
    with pytest.raises(FetchFailed, match="query result is NaN, not a finite number"):
        finish(spec(), (float("nan"),), "NaN")
    with pytest.raises(FetchFailed, match="no values in query result"):
        finish(spec(interval="5m", step="1m", aggregation="max"), (), "")


@given(
    stored=st.integers(min_value=1, max_value=300),
    history=st.integers(min_value=0, max_value=300),
    error=st.one_of(st.none(), st.just("boom")),
)
def test_interval_results_are_a_bounded_fifo(stored: int, history: int, error: str | None) -> None:
    metric = spec(interval="5m", storedResults=min(stored, 255))
    previous = [
        {"value": str(i), "range": {"interval": "5m"}, "lastUpdated": "x"} for i in range(history)
    ]
    patch = status_patch(metric, previous, Outcome("" if error else "7", b"", error), NOW)
    results = patch["intervalResults"]
    assert len(results) == min(history + 1, min(stored, 255))
    assert results[-1]["value"] == ("" if error else "7")
    assert ("errMsg" in results[-1]) is (error is not None)
    assert [r["value"] for r in results[:-1]] == [str(i) for i in range(history)][
        len(previous) - len(results) + 1 :
    ]
    assert patch["errMsg"] == error  # None clears an old error in the merge patch


def test_raw_values_are_capped_at_one_mebibyte() -> None:
    patch = status_patch(spec(), None, Outcome("1", b"x" * (RAW_VALUE_LIMIT + 10), None), NOW)
    assert len(base64.b64decode(patch["rawValue"])) == RAW_VALUE_LIMIT
    assert "intervalResults" not in patch
    assert patch["lastUpdated"] == "2026-01-01T12:00:00.000Z"


@given(st.text(min_size=1, max_size=60))
def test_metric_names_become_prometheus_names(name: str) -> None:
    out = normalise_name(name)
    assert out[0].isalpha() or out[0] == "_"
    assert all(c.isascii() and (c.isalnum() or c == "_") for c in out)


# --- provider answers --------------------------------------------------------------------------


def _prom(result_type: str, result: Any, *, series: bool = False) -> tuple[tuple[float, ...], str]:
    query = Query(text="q", end=NOW, series=series)
    reading = PrometheusProvider._read({"resultType": result_type, "result": result}, query)
    return reading.values, reading.text


def test_prometheus_answers() -> None:
    assert _prom("vector", [{"metric": {}, "value": [1, "0.5"]}]) == ((0.5,), "0.5")
    assert _prom("scalar", [1, "2"]) == ((2.0,), "2")
    matrix = [{"metric": {}, "values": [[1, "3"], [2, "4"]]}]
    assert _prom("matrix", matrix) == ((3.0,), "3")  # first sample, as Keptn
    assert _prom("matrix", matrix, series=True) == ((3.0, 4.0), "")
    for kind, result, message in [
        ("vector", [], "no values in query result"),
        ("vector", [{"value": [1, "1"]}, {"value": [1, "2"]}], "too many values in query result"),
        ("string", [1, "x"], "could not cast result"),
    ]:
        with pytest.raises(ProviderError, match=message):
            _prom(kind, result)


def test_elastic_value_rules() -> None:
    answer = {"hits": {"total": {"value": 42}}, "aggregations": {"p": {"value": 1.5}}}
    assert extract(answer, None) == 1.5
    assert extract({"hits": {"total": {"value": 42}}}, None) == 42.0
    assert extract(answer, "hits.total.value") == 42.0
    with pytest.raises(ProviderError, match="too many values"):
        extract({"aggregations": {"a": {"value": 1}, "b": {"value": 2}}}, None)
    with pytest.raises(ProviderError, match=r"no value at 'x\.y'"):
        extract(answer, "x.y")


def test_generic_queries_and_jsonpath() -> None:
    assert split_query("/a?b=c  $.x[0]") == ("/a?b=c", "$.x[0]")
    document = {"x": [1, "2.5", True], "y": {"z": 3}}
    assert select(document, "$.y.z", series=False) == [3.0]
    assert select(document, "$.x[1]", series=False) == [2.5]
    assert select({"x": [1, 2]}, "$.x", series=True) == [1.0, 2.0]
    with pytest.raises(ProviderError, match="is not a number"):
        select(document, "$.x[2]", series=False)
    with pytest.raises(ProviderError, match="invalid JSONPath"):
        select(document, "$[", series=False)
    with pytest.raises(ProviderError, match="<url> <jsonpath>"):
        split_query("/only-a-url")


@given(
    names=st.lists(st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True), min_size=1, max_size=40),
    interval=st.floats(min_value=1.0, max_value=3600.0),
    due=st.floats(min_value=1.6e9, max_value=2e9),
)
def test_spreading_only_ever_delays_and_by_less_than_the_window(
    names: list[str], interval: float, due: float
) -> None:
    window = min(interval, 10.0)
    for name in names:
        delay = spread_delay(("ns", name), due, interval, 10.0)
        assert 0.0 <= delay < window
        # Once on its phase, a metric stays there: the next period needs no delay.
        assert (
            spread_delay(("ns", name), due + delay + interval * 0, interval, 10.0)
            in (
                0.0,
                pytest.approx(0.0, abs=1e-6),
            )
            or interval % window > 1e-9
        )


def test_spreading_turns_one_burst_into_an_even_rate() -> None:
    due = 1_800_000_000.0
    landed = sorted(due + spread_delay(("ns", f"m-{i}"), due, 10.0, 10.0) for i in range(1000))
    per_second = [sum(1 for t in landed if due + s <= t < due + s + 1) for s in range(10)]
    # ~100 in each second, not 1000 in the first. Phases in the last second count as "on
    # phase" already (the tolerance for a fetch that starts a little late) and go at once.
    assert all(70 < n < 130 for n in per_second[1:9])
    assert per_second[0] + per_second[9] < 260
    assert spread_delay(("ns", "m"), due, 10.0, 0.0) == 0.0


def test_shards_partition_the_objects() -> None:
    default = EvaluatorSettings()
    canary = EvaluatorSettings(evaluator=EvaluatorGroup(shard="canary"))
    assert default.shard_selector() == "!evaluator.klt.sh/shard"
    assert canary.shard_selector() == "evaluator.klt.sh/shard=canary"
    for labels in (None, {}, {"app": "x"}, {"evaluator.klt.sh/shard": "canary"}):
        # Every object belongs to exactly one of the two.
        assert default.owns(labels) != canary.owns(labels)
