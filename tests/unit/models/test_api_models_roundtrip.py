"""Every Keptn kind survives apiserver JSON -> model -> JSON unchanged, status included."""

from __future__ import annotations

from typing import Any

import pytest
from api_examples import EXAMPLES
from crd_schema_tools import validation_problems

from klt_common.structs import api, crdgen


def _v1_schema(kind: api.ResourceKind) -> dict[str, Any]:
    crd = crdgen.crd_for(kind)
    (storage,) = [v for v in crd["spec"]["versions"] if v["storage"]]
    schema: dict[str, Any] = storage["schema"]["openAPIV3Schema"]
    return schema


def test_every_registered_kind_has_an_example() -> None:
    assert set(EXAMPLES) == {kind.kind for kind in api.resource_kinds()}


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_example_round_trips_unchanged(kind: str) -> None:
    obj = EXAMPLES[kind]
    model = api.by_kind(kind).model.model_validate(obj)
    assert model.to_manifest() == obj


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_example_parses_to_its_own_class_through_parse_resource(kind: str) -> None:
    model = api.parse_resource(EXAMPLES[kind])
    assert type(model) is api.by_kind(kind).model
    assert model == api.by_kind(kind).model.model_validate(EXAMPLES[kind])


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_example_uses_no_field_the_models_do_not_know(kind: str) -> None:
    model = api.parse_resource(EXAMPLES[kind])
    assert api.unknown_fields(model) == []


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_example_is_valid_under_the_generated_crd(kind: str) -> None:
    assert validation_problems(_v1_schema(api.by_kind(kind)), EXAMPLES[kind]) == []


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_python_mode_dump_validates_back_to_an_equal_model(kind: str) -> None:
    model = api.parse_resource(EXAMPLES[kind])
    again = type(model).model_validate(model.model_dump(by_alias=True))
    assert again == model
    by_name = type(model).model_validate(model.model_dump())
    assert by_name == model


def test_status_is_typed_after_parsing() -> None:
    app_version = api.KeptnAppVersion.model_validate(EXAMPLES["KeptnAppVersion"])
    status = app_version.status
    assert status is not None
    assert status.status is api.KeptnState.PROGRESSING
    assert status.post_deployment_status is api.KeptnState.WARNING
    assert status.current_phase == api.Phase.APP_POST_DEPLOY_EVALUATIONS
    assert status.pre_deployment_task_status is not None
    item = status.pre_deployment_task_status[0]
    assert isinstance(item, api.ItemStatus)
    assert item.status.is_completed
    assert item.start_time is not None
    assert item.start_time.tzinfo is not None
    assert status.phase_trace_ids == {
        "AppPreDeployTasks": {
            "traceparent": "00-8a2c3b0d1e2f3a4b5c6d7e8f9a0b1c2d-2b3c4d5e6f7a8b9c-01"
        }
    }


def test_irregular_wire_names_are_kept() -> None:
    config = api.KeptnConfig.model_validate(EXAMPLES["KeptnConfig"])
    assert config.spec.otel_collector_url == "otel-collector:4317"
    analysis = api.Analysis.model_validate(EXAMPLES["Analysis"])
    assert analysis.status is not None
    assert analysis.status.pass_ is True
    assert analysis.spec.timeframe.from_ is not None
    dumped = analysis.to_manifest()
    assert "from" in dumped["spec"]["timeframe"]
    assert "pass" in dumped["status"]
