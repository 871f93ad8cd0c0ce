"""Keptn CloudEvents on Kafka: both content modes in, structured replies out."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest

from klt_task_runner.jobexecutor import cloudevents

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)

STRUCTURED = {
    "specversion": "1.0",
    "id": "f2b878d3-03c0-4e8f-bc3f-454bc1b3d79b",
    "source": "shipyard-controller",
    "type": "sh.keptn.event.test.triggered",
    "time": "2019-06-07T07:02:15.64489Z",
    "datacontenttype": "application/json",
    "shkeptncontext": "08735340-6f9e-4b32-97ff-3b6c292bc50b",
    "triggeredid": "parent",
    "gitcommitid": "c0ffee",
    "shkeptnspecversion": "0.2.4",
    "data": {
        "project": "sockshop",
        "stage": "dev",
        "service": "carts",
        "labels": {"testId": "4711"},
        "test": {"teststrategy": "locust"},
    },
}


def test_a_structured_event_is_read() -> None:
    event = cloudevents.parse(json.dumps(STRUCTURED).encode())
    assert event.type == "sh.keptn.event.test.triggered"
    assert (event.task, event.kind, event.is_triggered) == ("test", "triggered", True)
    assert event.shkeptncontext == "08735340-6f9e-4b32-97ff-3b6c292bc50b"
    assert (event.triggeredid, event.gitcommitid) == ("parent", "c0ffee")
    assert event.extensions == {
        "datacontenttype": "application/json",
        "shkeptnspecversion": "0.2.4",
    }
    scope = cloudevents.scope_of(event)
    assert (scope.project, scope.stage, scope.service) == ("sockshop", "dev", "carts")
    assert scope.labels == {"testId": "4711"}


def test_a_binary_mode_event_is_read_from_ce_headers() -> None:
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", b"id-1"),
        ("ce_source", b"bridge"),
        ("ce_type", b"sh.keptn.event.deployment.finished"),
        ("ce_shkeptncontext", b"ctx"),
        ("content-type", b"application/json"),
    ]
    event = cloudevents.parse(json.dumps({"project": "p"}).encode(), headers)
    assert (event.id, event.source, event.shkeptncontext) == ("id-1", "bridge", "ctx")
    assert (event.task, event.kind) == ("deployment", "finished")
    assert event.data == {"project": "p"}


@pytest.mark.parametrize(
    ("event_type", "task"),
    [
        ("sh.keptn.event.test.triggered", "test"),
        ("sh.keptn.event.dev.delivery.triggered", None),  # a sequence event
        ("sh.keptn.log.error", None),
        ("sh.keptn.event.test.status.changed", None),
        ("sh.keptn.event..triggered", None),
        ("com.example.other", None),
    ],
)
def test_only_task_events_have_a_task(event_type: str, task: str | None) -> None:
    event = cloudevents.parse(json.dumps({**STRUCTURED, "type": event_type}).encode())
    assert event.task == task


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "JSON object, not an array"),
        (json.dumps({"id": "x", "type": "t", "source": "s"}).encode(), "'specversion'"),
        (json.dumps({**STRUCTURED, "id": 5}).encode(), "'id'"),
        (None, "no value"),
        (b"\xff\xfe", "not JSON"),
    ],
)
def test_records_that_are_no_cloudevents_are_refused(value: bytes | None, message: str) -> None:
    with pytest.raises(cloudevents.EventFormatError, match=message):
        cloudevents.parse(value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("text", "data must be an object, not a string"),
        (None, "data must be an object, not null"),
        ({"project": 5}, "data.project must be a string, not a number"),
        ({"project": "p", "labels": ["x"]}, "data.labels must be an object, not an array"),
    ],
)
def test_unusable_data_is_reported(data: object, message: str) -> None:
    event = cloudevents.parse(json.dumps({**STRUCTURED, "data": data}).encode())
    with pytest.raises(cloudevents.EventFormatError, match=message):
        cloudevents.scope_of(event)


def test_replies_answer_their_event_with_stable_ids() -> None:
    event = cloudevents.parse(json.dumps(STRUCTURED).encode())
    started = cloudevents.reply(event, "started", {"project": "sockshop"}, source="jes", now=NOW)
    again = cloudevents.reply(event, "started", {"project": "sockshop"}, source="jes", now=NOW)
    finished = cloudevents.reply(event, "finished", {}, source="jes", now=NOW)
    assert started["id"] == again["id"] != finished["id"]
    assert uuid.UUID(started["id"]).version == 5
    assert started["type"] == "sh.keptn.event.test.started"
    assert finished["type"] == "sh.keptn.event.test.finished"
    assert started["triggeredid"] == event.id
    assert started["shkeptncontext"] == event.shkeptncontext
    assert started["gitcommitid"] == "c0ffee"
    assert started["source"] == "jes"
    assert started["time"] == "2025-01-02T03:04:05Z"
    assert started["shkeptnspecversion"] == "0.2.4"
    value, headers = cloudevents.encode(started)
    assert json.loads(value) == started
    assert headers == [("content-type", b"application/cloudevents+json")]
    assert event.partition_key() == event.shkeptncontext
