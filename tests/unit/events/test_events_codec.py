"""The event catalogue's wire format: round trips, the partition key rule, malformed input."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from typing import Any

import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from klt_common.structs import events

NOW = datetime(2025, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC)

# --------------------------------------------------------------------------------------------
# Strategies: valid payloads of every catalogue type.

dns_label = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True)
app_name = st.from_regex(r"[A-Za-z0-9]([-_.A-Za-z0-9]{0,30}[A-Za-z0-9])?", fullmatch=True)
name = st.from_regex(r"[a-z0-9]([-.a-z0-9]{0,40}[a-z0-9])?", fullmatch=True)
# Any text JSON can carry (no lone surrogates), including quotes, newlines and emoji.
free_text = st.text(st.characters(codec="utf-8"), max_size=200)
# Hypothesis takes naive bounds and attaches the time zone itself.
_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC).replace(tzinfo=None)
_LATEST = datetime(2100, 1, 1, tzinfo=UTC).replace(tzinfo=None)
aware_time = st.datetimes(min_value=_EARLIEST, max_value=_LATEST, timezones=st.just(UTC))
states = st.sampled_from(events.State)
names = st.lists(name, max_size=4).map(tuple)

common: dict[str, st.SearchStrategy[Any]] = {"namespace": dns_label, "app": app_name}

PAYLOADS: dict[type[events.EventPayload], st.SearchStrategy[Any]] = {
    events.PodAdmitted: st.builds(
        events.PodAdmitted,
        **common,
        pod_name=st.one_of(st.just(""), name),
        pod_uid=st.one_of(st.just(""), st.uuids().map(str)),
        owner=st.builds(
            events.OwnerRef,
            kind=st.sampled_from(["ReplicaSet", "StatefulSet", "DaemonSet"]),
            name=name,
            uid=st.uuids().map(str),
            api_version=st.just("apps/v1"),
        ),
        workload=name,
        version=name,
        app_type_single_service=st.booleans(),
        pre_deployment_tasks=names,
        post_deployment_tasks=names,
        pre_deployment_evaluations=names,
        post_deployment_evaluations=names,
        metadata=st.dictionaries(name, free_text, max_size=3),
        admitted_at=aware_time,
    ),
    events.AppVersionCreated: st.builds(
        events.AppVersionCreated,
        **common,
        app_version_name=name,
        version=name,
        revision=st.integers(1, 10_000),
        generation=st.integers(0, 10_000),
    ),
    events.WorkloadVersionCreated: st.builds(
        events.WorkloadVersionCreated,
        **common,
        workload=name,
        workload_version_name=name,
        version=name,
    ),
    events.TaskRequested: st.builds(
        events.TaskRequested,
        **common,
        task_name=name,
        workload=st.none() | name,
        phase=name,
    ),
    events.TaskFinished: st.builds(
        events.TaskFinished,
        **common,
        task_name=name,
        workload=st.none() | name,
        state=states,
        reason=free_text,
        message=free_text,
    ),
    events.EvaluationRequested: st.builds(
        events.EvaluationRequested,
        **common,
        evaluation_name=name,
        workload=st.none() | name,
        phase=name,
    ),
    events.EvaluationFinished: st.builds(
        events.EvaluationFinished,
        **common,
        evaluation_name=name,
        workload=st.none() | name,
        state=states,
        message=free_text,
    ),
    events.PhaseChanged: st.builds(
        events.PhaseChanged,
        **common,
        object_kind=st.sampled_from(["KeptnAppVersion", "KeptnWorkloadVersion"]),
        object_name=name,
        phase=name,
        state=states,
    ),
}

any_payload = st.one_of(*PAYLOADS.values())


def sample(model: type[events.EventPayload]) -> events.EventPayload:
    """One fixed, valid payload per type (for example-based tests)."""
    fields: dict[str, Any] = {"namespace": "shop", "app": "checkout"}
    extra: dict[type[events.EventPayload], dict[str, Any]] = {
        events.PodAdmitted: {
            "pod_name": "checkout-7d9f-abcde",
            "pod_uid": "",
            "owner": {
                "kind": "ReplicaSet",
                "name": "checkout-7d9f",
                "uid": "u1",
                "api_version": "apps/v1",
            },
            "workload": "checkout-web",
            "version": "1.2.3",
            "app_type_single_service": False,
            "pre_deployment_tasks": ["notify"],
            "metadata": {"team": "payments"},
            "admitted_at": NOW,
        },
        events.AppVersionCreated: {
            "app_version_name": "checkout-1.2.3-6b86",
            "version": "1.2.3",
            "generation": 4,
        },
        events.WorkloadVersionCreated: {
            "workload": "checkout-web",
            "workload_version_name": "checkout-web-1.2.3",
            "version": "1.2.3",
        },
        events.TaskRequested: {
            "task_name": "pre-notify-1",
            "workload": "checkout-web",
            "phase": "WorkloadPreDeployTasks",
        },
        events.TaskFinished: {
            "task_name": "pre-notify-1",
            "state": "Failed",
            "reason": "JobFailed",
            "message": "exit 1",
        },
        events.EvaluationRequested: {
            "evaluation_name": "pre-eval-1",
            "phase": "AppPreDeployEvaluations",
        },
        events.EvaluationFinished: {"evaluation_name": "pre-eval-1", "state": "Succeeded"},
        events.PhaseChanged: {
            "object_kind": "KeptnAppVersion",
            "object_name": "checkout-1.2.3-6b86",
            "phase": "AppDeploy",
            "state": "Progressing",
        },
    }
    return model(**fields, **extra[model])


ALL_MODELS = [spec.model for spec in events.CATALOGUE.values()]


# --------------------------------------------------------------------------------------------
# The catalogue itself.


def test_catalogue_lists_every_payload_type_once() -> None:
    assert set(PAYLOADS) == set(ALL_MODELS)
    assert len(events.CATALOGUE) == 8
    for event_type, spec in events.CATALOGUE.items():
        assert event_type == spec.model.event_type == spec.type
        assert event_type.startswith("sh.klt.")
        assert spec.topic is not events.Topic.DEADLETTER
        assert spec.producer
        assert spec.consumers


def test_catalogue_topics_match_the_design() -> None:
    topics = {t: spec.topic.value for t, spec in events.CATALOGUE.items()}
    assert topics == {
        "sh.klt.pod.admitted": "klt.discovery",
        "sh.klt.appversion.created": "klt.lifecycle",
        "sh.klt.workloadversion.created": "klt.lifecycle",
        "sh.klt.task.requested": "klt.tasks",
        "sh.klt.task.finished": "klt.lifecycle",
        "sh.klt.evaluation.requested": "klt.evaluations",
        "sh.klt.evaluation.finished": "klt.lifecycle",
        "sh.klt.phase.changed": "klt.lifecycle",
    }
    assert events.Topic.DEADLETTER.full_name("dev.") == "dev.klt.deadletter"
    assert events.topics_for([events.TaskFinished, events.PhaseChanged]) == {events.Topic.LIFECYCLE}


@pytest.mark.parametrize("model", ALL_MODELS, ids=lambda m: m.event_type)
def test_payloads_are_frozen_closed_and_versioned(model: type[events.EventPayload]) -> None:
    payload = sample(model)
    assert payload.schema_version == 1
    with pytest.raises(pydantic.ValidationError):
        payload.namespace = "other"  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError, match="Extra inputs"):
        model.model_validate({**payload.model_dump(), "surprise": 1})


# --------------------------------------------------------------------------------------------
# Round trips and the envelope.


@pytest.mark.parametrize("model", ALL_MODELS, ids=lambda m: m.event_type)
def test_round_trip_per_event_type(model: type[events.EventPayload]) -> None:
    envelope = events.make_event(sample(model), source="/klt/test")
    value, headers = events.encode(envelope)

    assert headers == [("content-type", b"application/cloudevents+json")]
    decoded = events.decode(value, headers)
    assert decoded == envelope
    assert type(decoded.data) is model
    assert decoded.data == envelope.data


def test_structured_mode_envelope_is_self_describing_json() -> None:
    payload = sample(events.TaskFinished)
    envelope = events.make_event(payload, source="/klt/task-runner", event_id="e-1", time=NOW)
    wire = json.loads(events.encode(envelope)[0])
    assert wire == {
        "specversion": "1.0",
        "id": "e-1",
        "source": "/klt/task-runner",
        "type": "sh.klt.task.finished",
        "subject": "pre-notify-1",
        "time": "2025-01-02T03:04:05.678000Z",
        "datacontenttype": "application/json",
        "partitionkey": "shop/checkout",
        "data": {
            "schema_version": 1,
            "namespace": "shop",
            "app": "checkout",
            "task_name": "pre-notify-1",
            "workload": None,
            "state": "Failed",
            "reason": "JobFailed",
            "message": "exit 1",
        },
    }
    # Trace context rides in Kafka headers, never in the event.
    assert "traceparent" not in wire


def test_make_event_defaults_and_overrides() -> None:
    payload = sample(events.PodAdmitted)
    first = events.make_event(payload, source="/klt/webhook")
    second = events.make_event(payload, source="/klt/webhook")
    assert first.id != second.id  # random ids by default
    assert first.subject == "checkout-7d9f-abcde"
    assert first.time.tzinfo is not None
    named = events.make_event(payload, source="/klt/webhook", subject="s", event_id="fixed")
    assert (named.subject, named.id) == ("s", "fixed")
    # A pod without a name yet (generateName) is identified by its owner.
    nameless = events.make_event(payload.model_copy(update={"pod_name": ""}), source="/x")
    assert nameless.subject == "ReplicaSet/checkout-7d9f"


def test_decode_accepts_records_without_content_type_and_with_parameters() -> None:
    value, _ = events.encode(events.make_event(sample(events.TaskRequested), source="/x"))
    assert events.decode(value, []).type == "sh.klt.task.requested"
    params = [("Content-Type", b"application/cloudevents+json; charset=utf-8")]
    assert events.decode(value, params).type == "sh.klt.task.requested"


def test_decode_ignores_unknown_envelope_extensions() -> None:
    value, headers = events.encode(events.make_event(sample(events.TaskRequested), source="/x"))
    raw = json.loads(value)
    raw["someextension"] = "added by a proxy"
    assert events.decode(json.dumps(raw).encode(), headers).data == sample(events.TaskRequested)


# --------------------------------------------------------------------------------------------
# Malformed input.


def _valid_raw() -> dict[str, Any]:
    value, _ = events.encode(events.make_event(sample(events.TaskFinished), source="/x"))
    return dict(json.loads(value))


def _mutated(**changes: Any) -> bytes:
    raw = _valid_raw()
    for key, change in changes.items():
        if change is _DROP:
            del raw[key]
        else:
            raw[key] = change
    return json.dumps(raw).encode()


_DROP = object()


@pytest.mark.parametrize(
    ("value", "headers", "match"),
    [
        (None, [], "tombstone"),
        (b"", [], "not JSON"),
        (b"\xff\xfe garbage", [], "not JSON"),
        (b"{not json", [], "not JSON"),
        (b"[1, 2]", [], "JSON list"),
        (b'"text"', [], "JSON str"),
        (_mutated(specversion="0.3"), [], "specversion"),
        (_mutated(specversion=_DROP), [], "specversion"),
        (_mutated(type=_DROP), [], "type is missing"),
        (_mutated(type=7), [], "type is missing"),
        (_mutated(id=_DROP), [], r"\bid: Field required"),
        (_mutated(id=""), [], r"\bid: String should have at least 1"),
        (_mutated(source=_DROP), [], "source: Field required"),
        (_mutated(time="2025-01-01T00:00:00"), [], "time: .*timezone"),
        (_mutated(time="yesterday"), [], "time: "),
        (_mutated(datacontenttype="text/xml"), [], "datacontenttype"),
        (_mutated(data=_DROP), [], "data: Field required"),
        (_mutated(data=[]), [], "data: "),
        (_mutated(partitionkey="other/app"), [], "partitionkey does not match"),
        (_mutated(partitionkey=_DROP), [], "partitionkey: Field required"),
        (
            json.dumps(_valid_raw()).encode(),
            [("content-type", b"application/json")],
            "content-type",
        ),
    ],
)
def test_malformed_records_raise_a_typed_error(
    value: bytes | None, headers: list[tuple[str, bytes]], match: str
) -> None:
    with pytest.raises(events.MalformedEventError, match=match):
        events.decode(value, headers)


@pytest.mark.parametrize(
    ("data_change", "match"),
    [
        ({"state": "Exploded"}, r"data\.state"),
        ({"surprise": True}, r"data\.surprise: Extra inputs"),
        ({"task_name": ""}, r"data\.task_name"),
        ({"namespace": "Not_A_Namespace"}, r"data\.namespace"),
        ({"app": "has/slash"}, r"data\.app"),
        ({"schema_version": "one"}, r"data\.schema_version"),
    ],
)
def test_invalid_data_is_malformed(data_change: dict[str, Any], match: str) -> None:
    raw = _valid_raw()
    raw["data"] = {**raw["data"], **data_change}
    with pytest.raises(events.MalformedEventError, match=match):
        events.decode(json.dumps(raw).encode())


def test_error_messages_do_not_quote_field_values() -> None:
    raw = _valid_raw()
    raw["data"] = {**raw["data"], "state": "hunter2-secret", "password": "hunter2-secret"}
    with pytest.raises(events.MalformedEventError) as caught:
        events.decode(json.dumps(raw).encode())
    assert "hunter2" not in str(caught.value)
    assert "data.password" in str(caught.value)


def test_unknown_types_are_a_distinct_error() -> None:
    raw = _valid_raw()
    raw["type"] = "sh.klt.something.new"
    raw["data"] = {"whatever": "a newer producer sends"}
    with pytest.raises(events.UnknownEventTypeError) as caught:
        events.decode(json.dumps(raw).encode())
    assert caught.value.event_type == "sh.klt.something.new"
    assert isinstance(caught.value, events.EventDecodeError)
    assert not isinstance(caught.value, events.MalformedEventError)


# --------------------------------------------------------------------------------------------
# Properties.


@given(payload=any_payload, source=st.sampled_from(["/klt/webhook", "/klt/scheduler"]))
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_property_round_trip(payload: events.EventPayload, source: str) -> None:
    envelope = events.make_event(payload, source=source)
    value, headers = events.encode(envelope)
    decoded = events.decode(value, headers)
    assert decoded == envelope
    assert type(decoded.data) is type(payload)


@given(payload=any_payload)
def test_property_partition_key_is_namespace_slash_app(payload: events.EventPayload) -> None:
    envelope = events.make_event(payload, source="/x")
    assert envelope.partitionkey == payload.partition_key() == f"{payload.namespace}/{payload.app}"
    # Unambiguous: the namespace never contains '/', so the key splits back at the first one.
    assert tuple(envelope.partitionkey.split("/", 1)) == (payload.namespace, payload.app)


@given(first=any_payload, second=any_payload)
def test_property_one_app_one_key(first: events.EventPayload, second: events.EventPayload) -> None:
    # Every event type of one app shares the key, so they share a partition and an order.
    moved = second.model_copy(update={"namespace": first.namespace, "app": first.app})
    assert moved.partition_key() == first.partition_key()


@given(value=st.binary(max_size=300))
def test_property_arbitrary_bytes_never_crash_decode(value: bytes) -> None:
    with contextlib.suppress(events.EventDecodeError):
        events.decode(value)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | free_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(free_text, inner, max_size=3),
    max_leaves=10,
)


@given(payload=any_payload, key=st.sampled_from([*_valid_raw(), "extra"]), junk=json_values)
def test_property_corrupted_envelopes_fail_cleanly(
    payload: events.EventPayload, key: str, junk: Any
) -> None:
    raw = json.loads(events.encode(events.make_event(payload, source="/x"))[0])
    raw[key] = junk
    try:
        decoded = events.decode(json.dumps(raw).encode())
    except events.EventDecodeError:
        return
    # When a corruption is accepted, the result is still a fully valid event.
    assert type(decoded.data) in PAYLOADS
    assert decoded.partitionkey == decoded.data.partition_key()
