"""Reading is lenient, writing loses nothing, and strictness is available on request.

Aspects covered:
- unknown keys in metadata, spec and status are kept and written back;
- :func:`unknown_fields` reports them, except in metadata and free-form objects;
- camelCase and snake_case input both work, output is always camelCase;
- the wrong kind, a nameless task container or a malformed duration are rejected;
- empty-string states read as Pending; times come out as UTC with a "Z";
- quantities keep their int/str form.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from klt_common.structs import api
from klt_common.structs.api import lifecycle, metrics


def _task_definition(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "lifecycle.keptn.sh/v1",
        "kind": "KeptnTaskDefinition",
        "metadata": {"name": "t"},
        "spec": spec,
    }


def test_unknown_keys_everywhere_survive_a_round_trip() -> None:
    obj = {
        "apiVersion": "lifecycle.keptn.sh/v1",
        "kind": "KeptnTask",
        "metadata": {"name": "t", "selfLink": "/x", "managedFields": [{"manager": "m"}]},
        "spec": {"taskDefinition": "d", "futureField": {"a": 1}, "retries": 1, "timeout": "1m"},
        "status": {"status": "Succeeded", "futureStatus": ["x"]},
        "futureTopLevel": True,
    }
    model = api.KeptnTask.model_validate(obj)
    assert model.to_manifest() == {**obj, "status": {"status": "Succeeded", "futureStatus": ["x"]}}
    assert sorted(api.unknown_fields(model)) == [
        "futureTopLevel",
        "spec.futureField",
        "status.futureStatus",
    ]


def test_unknown_fields_reports_nested_paths_and_skips_free_form_containers() -> None:
    model = api.KeptnTaskDefinition.model_validate(
        _task_definition(
            {
                "deno": {"inlin": {"code": "typo above"}, "parameters": {"map": {}, "mapp": 1}},
                "imagePullSecrets": [{"name": "a"}, {"name": "b", "nmae": "c"}],
                "container": {"name": "c", "image": "busybox", "anything": {"goes": True}},
            }
        )
    )
    assert sorted(api.unknown_fields(model)) == [
        "spec.deno.inlin",
        "spec.deno.parameters.mapp",
        "spec.imagePullSecrets[1].nmae",
    ]


def test_snake_case_input_is_accepted_and_written_as_camel_case() -> None:
    spec = lifecycle.KeptnAppVersionSpec(
        app_name="a", version="1", pre_deployment_tasks=["t"], span_links=["x"]
    )
    assert spec.model_dump(by_alias=True, exclude_none=True) == {
        "appName": "a",
        "version": "1",
        "revision": 1,
        "preDeploymentTasks": ["t"],
        "spanLinks": ["x"],
    }
    status = lifecycle.KeptnAppVersionStatus(phase_trace_ids={"AppDeploy": {"traceparent": "t"}})
    assert status.model_dump(by_alias=True)["phaseTraceIDs"] == {"AppDeploy": {"traceparent": "t"}}


def test_wrong_kind_is_rejected() -> None:
    obj = {"apiVersion": "lifecycle.keptn.sh/v1", "kind": "KeptnWorkload", "spec": {"version": "1"}}
    with pytest.raises(ValidationError, match="kind"):
        api.KeptnApp.model_validate(obj)


def test_parse_resource_rejects_unknown_and_missing_kinds() -> None:
    with pytest.raises(api.UnknownKindError):
        api.parse_resource({"kind": "Deployment"})
    with pytest.raises(api.UnknownKindError):
        api.parse_resource({"spec": {}})


def test_task_container_is_free_form_but_needs_a_name() -> None:
    container = {
        "name": "runner",
        "image": "alpine:3.20",
        "command": ["sh", "-c", "echo hi"],
        "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
        "resources": {"limits": {"memory": "64Mi"}},
    }
    model = api.KeptnTaskDefinition.model_validate(_task_definition({"container": container}))
    assert model.spec.container == container
    assert model.to_manifest()["spec"]["container"] == container
    with pytest.raises(ValidationError, match="name"):
        api.KeptnTaskDefinition.model_validate(_task_definition({"container": {"image": "x"}}))


@pytest.mark.parametrize("timeout", ["5m", "1h30m", "250ms", "1.5s", "0", "90µs"])
def test_go_durations_are_accepted(timeout: str) -> None:
    spec = lifecycle.KeptnTaskDefinitionSpec(timeout=timeout)
    assert spec.timeout == timeout


@pytest.mark.parametrize("timeout", ["five minutes", "5", "m5", ""])
def test_non_durations_are_rejected(timeout: str) -> None:
    with pytest.raises(ValidationError):
        lifecycle.KeptnTaskDefinitionSpec(timeout=timeout)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5m", timedelta(minutes=5)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1.5s", timedelta(seconds=1.5)),
        ("300ms", timedelta(milliseconds=300)),
        ("2us", timedelta(microseconds=2)),
        ("2µs", timedelta(microseconds=2)),
        ("-2m", timedelta(minutes=-2)),
        ("0", timedelta(0)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert api.parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "5", "m", "5x", "1h 30m", "five"])
def test_parse_duration_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        api.parse_duration(text)


def test_blank_states_read_as_pending() -> None:
    status = lifecycle.KeptnAppVersionStatus.model_validate(
        {"status": "", "preDeploymentStatus": "", "workloadStatus": [{"status": ""}]}
    )
    assert status.status is api.KeptnState.PENDING
    assert status.pre_deployment_status is api.KeptnState.PENDING
    assert status.workload_status is not None
    assert status.workload_status[0].status is api.KeptnState.PENDING
    analysis_status = metrics.AnalysisStatus.model_validate({"state": "", "timeframe": {}})
    assert analysis_status.state is api.AnalysisState.PENDING


def test_an_unknown_state_is_an_error() -> None:
    with pytest.raises(ValidationError):
        lifecycle.KeptnTaskStatus.model_validate({"status": "Exploded"})


def test_times_are_utc_and_written_with_z() -> None:
    status = lifecycle.KeptnTaskStatus(
        start_time=datetime(2024, 1, 2, 3, 4, 5),  # noqa: DTZ001 - naive means UTC here
        end_time=datetime(2024, 1, 2, 4, 4, 5, 250000, tzinfo=UTC) + timedelta(hours=0),
    )
    dumped = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert dumped["startTime"] == "2024-01-02T03:04:05Z"
    assert dumped["endTime"] == "2024-01-02T04:04:05.250000Z"
    parsed = lifecycle.KeptnTaskStatus.model_validate({"startTime": "2024-01-02T05:04:05+02:00"})
    assert parsed.start_time == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert parsed.model_dump(mode="json", by_alias=True)["startTime"] == "2024-01-02T03:04:05Z"


@pytest.mark.parametrize("value", [5, "5", "500m", "1.5", -2])
def test_quantities_keep_their_wire_form(value: int | str) -> None:
    operator = metrics.OperatorValue.model_validate({"fixedValue": value})
    assert operator.fixed_value == value
    assert type(operator.fixed_value) is type(value)
    assert operator.model_dump(by_alias=True) == {"fixedValue": value}


def test_total_score_percentages_are_bounded() -> None:
    with pytest.raises(ValidationError):
        metrics.TotalScore(pass_percentage=101, warning_percentage=50)
    with pytest.raises(ValidationError):
        metrics.TotalScore(pass_percentage=90, warning_percentage=-1)


def test_provider_type_follows_keptns_pattern() -> None:
    assert (
        metrics.KeptnMetricsProviderSpec(type="prometheus", target_server="x").type == "prometheus"
    )
    with pytest.raises(ValidationError):
        metrics.KeptnMetricsProviderSpec(type="graphite", target_server="x")


def test_unknown_aggregation_is_rejected() -> None:
    assert metrics.RangeSpec(aggregation="p99").aggregation is api.Aggregation.P99
    with pytest.raises(ValidationError):
        metrics.RangeSpec(aggregation="p50")
