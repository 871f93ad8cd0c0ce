"""Event matching and JSONPath lookups, as JES's ``IsEventMatch``.

Aspects: unanchored regular expressions on the type; JSONPath on the mapped event with exact
string equality (numbers and booleans never match); invalid expressions match nothing; the
mapped document has exactly JES's keys; actions are returned in configuration order.
"""

from __future__ import annotations

from typing import Any

import pytest

from klt_task_runner.jobexecutor import cloudevents, config, matching


def _event(
    event_type: str, data: Any = None, *, triggeredid: str = "", gitcommitid: str = ""
) -> cloudevents.KeptnEvent:
    return cloudevents.KeptnEvent(
        type=event_type,
        id="f2b878d3-03c0-4e8f-bc3f-454bc1b3d79b",
        source="test-events",
        specversion="1.0",
        shkeptncontext="08735340-6f9e-4b32-97ff-3b6c292bc50i",
        time="2019-06-07T07:02:15.64489Z",
        data=data,
        triggeredid=triggeredid,
        gitcommitid=gitcommitid,
    )


def _filter(name: str, prop: str | None = None, match: str = "") -> config.EventFilter:
    jsonpath = None if prop is None else config.JsonPathFilter(property_=prop, match=match)
    return config.EventFilter(name=name, jsonpath=jsonpath)


TEST_DATA = {
    "project": "sockshop",
    "stage": "dev",
    "service": "carts",
    "labels": {"testId": "4711"},
    "test": {"teststrategy": "locust", "count": 4711, "enabled": True},
}


@pytest.mark.parametrize(
    ("pattern", "event_type", "expected"),
    [
        pytest.param("sh.keptn.event.test.triggered", "sh.keptn.event.test.triggered", True),
        pytest.param("sh.keptn.event.*.triggered", "sh.keptn.event.deployment.triggered", True),
        pytest.param("sh.keptn.event.*", "sh.keptn.event.action.finished", True, id="prefix"),
        pytest.param("test", "sh.keptn.event.test.triggered", True, id="unanchored"),
        pytest.param("sh.keptn.event.test.triggered", "sh-keptn-event-test-triggered", True),
        pytest.param("^sh.keptn.event.test.finished$", "sh.keptn.event.test.triggered", False),
        pytest.param("sh.keptn.event.action.triggered", "sh.keptn.event.test.triggered", False),
        pytest.param("sh.keptn.event.(test.triggered", "sh.keptn.event.test.triggered", False),
        pytest.param("", "sh.keptn.event.test.triggered", True, id="empty-matches-all"),
    ],
)
def test_event_names_are_unanchored_regular_expressions(
    pattern: str, event_type: str, expected: bool
) -> None:
    event = _event(event_type)
    assert matching.event_matches(_filter(pattern), event_type, event.mapped()) is expected


@pytest.mark.parametrize(
    ("prop", "match", "expected"),
    [
        pytest.param("$.data.test.teststrategy", "locust", True, id="equal"),
        pytest.param("$.data.test.teststrategy", "health", False, id="different"),
        pytest.param("$.data.test.teststrategy", "", False, id="empty-match"),
        pytest.param("$.data.test.count", "4711", False, id="numbers-never-match"),
        pytest.param("$.data.test.enabled", "true", False, id="booleans-never-match"),
        pytest.param("$.data.labels.testId", "4711", True, id="a-string-label"),
        pytest.param("$.data.missing.key", "x", False, id="missing-key"),
        pytest.param("$.data.test", "locust", False, id="a-map"),
        pytest.param("$.data.[", "locust", False, id="invalid-path"),
        pytest.param("$.type", "sh.keptn.event.test.triggered", True, id="envelope-field"),
        pytest.param("$.shkeptncontext", "08735340-6f9e-4b32-97ff-3b6c292bc50i", True),
        pytest.param("$.triggeredid", "abc", False, id="not-in-the-mapped-event"),
    ],
)
def test_jsonpath_filters_need_an_equal_string(prop: str, match: str, expected: bool) -> None:
    event = _event("sh.keptn.event.test.triggered", TEST_DATA, triggeredid="abc")
    entry = _filter("sh.keptn.event.test.triggered", prop, match)
    assert matching.event_matches(entry, event.type, event.mapped()) is expected


def test_an_empty_jsonpath_property_means_the_name_alone_decides() -> None:
    event = _event("sh.keptn.event.test.triggered", TEST_DATA)
    assert matching.event_matches(_filter("test", "", "whatever"), event.type, event.mapped())


def test_the_mapped_event_has_exactly_jes_keys() -> None:
    event = _event("sh.keptn.event.test.triggered", TEST_DATA, gitcommitid="c0ffee")
    mapped = event.mapped()
    assert set(mapped) == {
        "id",
        "shkeptncontext",
        "time",
        "source",
        "data",
        "specversion",
        "type",
        "gitcommitid",
    }
    assert mapped["data"]["project"] == "sockshop"
    assert mapped["gitcommitid"] == "c0ffee"


def test_actions_match_when_any_entry_does_and_keep_their_order() -> None:
    cfg = config.JobConfig(
        api_version="v2",
        actions=[
            config.Action(name="hello", events=[_filter("sh.keptn.event.action.triggered")]),
            config.Action(name="tests", events=[_filter("sh.keptn.event.test.triggered")]),
            config.Action(
                name="both",
                events=[_filter("nope"), _filter("sh.keptn.event.*.triggered")],
            ),
            config.Action(name="no-events"),
        ],
    )
    matched = matching.matching_actions(cfg, _event("sh.keptn.event.action.triggered"))
    assert [(i, a.name) for i, a in matched] == [(0, "hello"), (2, "both")]
    assert matching.matching_actions(cfg, _event("sh.keptn.event.action.started")) == []


def test_a_wildcard_config_matches_events_without_data() -> None:
    cfg = config.JobConfig(
        api_version="v2",
        actions=[config.Action(name="any", events=[_filter("sh.keptn.event.*.triggered")])],
    )
    assert matching.matching_actions(cfg, _event("sh.keptn.event.test.triggered", None))


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param("$", {"a": [1, 2], "m": {"k": "v"}}, id="root"),
        pytest.param("$.m.k", "v", id="field"),
        pytest.param("$.a[1]", 2, id="index"),
        pytest.param("$.a[*]", [1, 2], id="wildcard-gives-a-list"),
        pytest.param("$..k", ["v"], id="descent-gives-a-list"),
        pytest.param("$['m']['k']", "v", id="bracket-fields"),
    ],
)
def test_resolve(path: str, expected: Any) -> None:
    assert matching.resolve(path, {"a": [1, 2], "m": {"k": "v"}}) == expected


@pytest.mark.parametrize(
    ("path", "message"),
    [
        pytest.param("$.data.undeploymentstrategy", "unknown key undeploymentstrategy"),
        pytest.param("$.data.list[3]", "index 3 out of range"),
        pytest.param("$.data.text.deeper", "unknown key deeper", id="into-a-string"),
        pytest.param("$.data[", "invalid JSONPath", id="syntax"),
    ],
)
def test_resolve_says_what_is_missing(path: str, message: str) -> None:
    with pytest.raises(matching.PathError, match=message.replace("[", r"\[")):
        matching.resolve(path, {"data": {"list": [1], "text": "x"}})
