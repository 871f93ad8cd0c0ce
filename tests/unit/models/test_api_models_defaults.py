"""Defaults match Keptn's CRDs, and absent optional fields stay absent."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from klt_common.structs import api
from klt_common.structs.api import lifecycle, metrics, options


def _obj(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    entry = api.by_kind(kind)
    return {"apiVersion": entry.api_version, "kind": kind, "metadata": {"name": "x"}, "spec": spec}


@pytest.mark.parametrize(
    ("kind", "spec", "expected_spec"),
    [
        pytest.param(
            "KeptnApp", {"version": "1.0"}, {"version": "1.0", "revision": 1}, id="app-revision"
        ),
        pytest.param(
            "KeptnTaskDefinition",
            {"deno": {"inline": {"code": "x"}}},
            {
                "deno": {"inline": {"code": "x"}},
                "retries": 10,
                "timeout": "5m",
                "ttlSecondsAfterFinished": 300,
            },
            id="taskdefinition",
        ),
        pytest.param(
            "KeptnTask",
            {"taskDefinition": "t"},
            {"taskDefinition": "t", "retries": 10, "timeout": "5m"},
            id="task",
        ),
        pytest.param(
            "KeptnEvaluationDefinition",
            {"objectives": []},
            {"objectives": [], "retries": 10, "retryInterval": "5s"},
            id="evaluationdefinition",
        ),
        pytest.param(
            "KeptnEvaluation",
            {"evaluationDefinition": "d", "workloadVersion": ""},
            {
                "evaluationDefinition": "d",
                "workloadVersion": "",
                "retries": 10,
                "retryInterval": "5s",
            },
            id="evaluation",
        ),
        pytest.param(
            "KeptnMetric",
            {"provider": {"name": "p"}, "query": "q", "fetchIntervalSeconds": 5, "range": {}},
            {
                "provider": {"name": "p"},
                "query": "q",
                "fetchIntervalSeconds": 5,
                "range": {"interval": "5m"},
            },
            id="metric-range-interval",
        ),
        pytest.param(
            "KeptnMetricsProvider",
            {"targetServer": "http://prom:9090"},
            {"targetServer": "http://prom:9090", "insecureSkipTlsVerify": False},
            id="provider",
        ),
        pytest.param(
            "AnalysisDefinition",
            {
                "objectives": [{"analysisValueTemplateRef": {"name": "t"}}],
                "totalScore": {"passPercentage": 90, "warningPercentage": 70},
            },
            {
                "objectives": [
                    {"analysisValueTemplateRef": {"name": "t"}, "weight": 1, "keyObjective": False}
                ],
                "totalScore": {"passPercentage": 90, "warningPercentage": 70},
            },
            id="analysisdefinition-objective",
        ),
        pytest.param(
            "KeptnConfig",
            {},
            {
                "keptnAppCreationRequestTimeoutSeconds": 30,
                "blockDeployment": True,
                "observabilityTimeout": "5m",
            },
            id="config",
        ),
        pytest.param("KeptnAppContext", {}, {}, id="appcontext-empty"),
    ],
)
def test_spec_defaults_are_keptns(
    kind: str, spec: dict[str, Any], expected_spec: dict[str, Any]
) -> None:
    model = api.by_kind(kind).model.model_validate(_obj(kind, spec))
    assert model.to_manifest()["spec"] == expected_spec


def test_spec_may_be_omitted_where_keptn_has_no_required_spec_field() -> None:
    config = api.KeptnConfig.model_validate({"kind": "KeptnConfig", "metadata": {"name": "c"}})
    assert config.spec.block_deployment is True
    assert config.api_version == "options.keptn.sh/v1alpha1"
    definition = api.KeptnTaskDefinition.model_validate({"kind": "KeptnTaskDefinition"})
    assert definition.spec.retries == 10


def test_missing_status_stays_missing() -> None:
    app = api.KeptnApp.model_validate(_obj("KeptnApp", {"version": "1"}))
    assert app.status is None
    assert "status" not in app.to_manifest()


@pytest.mark.parametrize(
    "status_model",
    [lifecycle.KeptnAppVersionStatus, lifecycle.KeptnWorkloadVersionStatus],
    ids=["appversion", "workloadversion"],
)
def test_empty_version_status_starts_pending_everywhere(status_model: type[BaseModel]) -> None:
    dumped = status_model.model_validate({}).model_dump(
        mode="json", by_alias=True, exclude_none=True
    )
    assert dumped
    assert set(dumped.values()) == {"Pending"}


def test_item_and_task_status_default_to_pending() -> None:
    assert api.ItemStatus().status is api.KeptnState.PENDING
    assert lifecycle.KeptnTaskStatus().status is api.KeptnState.PENDING
    assert lifecycle.WorkloadStatus().status is api.KeptnState.PENDING


def test_evaluation_status_writes_the_fields_keptns_crd_requires() -> None:
    dumped = lifecycle.KeptnEvaluationStatus().model_dump(mode="json", by_alias=True)
    assert dumped["retryCount"] == 0
    assert dumped["evaluationStatus"] == {}
    assert dumped["overallStatus"] == "Pending"


def test_analysis_status_writes_the_fields_keptns_crd_requires() -> None:
    dumped = metrics.AnalysisStatus().model_dump(mode="json", by_alias=True, exclude_none=True)
    assert dumped == {"timeframe": {}, "state": "Pending"}


def test_config_spec_defaults_as_python_values() -> None:
    spec = options.KeptnConfigSpec()
    assert spec.keptn_app_creation_request_timeout_seconds == 30
    assert spec.block_deployment is True
    assert api.parse_duration(spec.observability_timeout).total_seconds() == 300
