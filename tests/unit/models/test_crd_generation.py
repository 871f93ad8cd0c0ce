"""The generated CRDs: committed files up to date, structural schemas, Keptn's names and versions.

The drift test here is what keeps ``deploy/crds`` honest: change a model without running
``python -m klt_common.structs.crdgen --out deploy/crds`` and it fails.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml
from crd_schema_tools import root_problems, structural_problems
from pydantic import Field

from klt_common.structs import api, crdgen
from klt_common.structs.api import options

REPO_ROOT = Path(__file__).resolve().parents[3]
CRD_DIR = REPO_ROOT / "deploy" / "crds"

LIFECYCLE_OLD = ["v1alpha1", "v1alpha2", "v1alpha3", "v1beta1"]
SERVED = {
    "KeptnApp": ["v1", *LIFECYCLE_OLD],
    "KeptnAppContext": ["v1", "v1beta1"],
    "KeptnAppCreationRequest": ["v1", "v1alpha3", "v1beta1"],
    "KeptnAppVersion": ["v1", *LIFECYCLE_OLD],
    "KeptnWorkload": ["v1", *LIFECYCLE_OLD],
    "KeptnWorkloadVersion": ["v1", "v1alpha4", "v1beta1"],
    "KeptnTaskDefinition": ["v1", *LIFECYCLE_OLD],
    "KeptnTask": ["v1", *LIFECYCLE_OLD],
    "KeptnEvaluationDefinition": ["v1", *LIFECYCLE_OLD],
    "KeptnEvaluation": ["v1", *LIFECYCLE_OLD],
    "KeptnMetric": ["v1", "v1alpha1", "v1alpha2", "v1alpha3", "v1beta1"],
    "KeptnMetricsProvider": ["v1", "v1alpha2", "v1alpha3", "v1beta1"],
    "Analysis": ["v1", "v1alpha3", "v1beta1"],
    "AnalysisDefinition": ["v1", "v1alpha3", "v1beta1"],
    "AnalysisValueTemplate": ["v1", "v1alpha3", "v1beta1"],
    "KeptnConfig": ["v1alpha1"],
}

KINDS = api.resource_kinds()


def _kind_id(entry: api.ResourceKind) -> str:
    return entry.kind


def _storage_schema(entry: api.ResourceKind) -> dict[str, Any]:
    (storage,) = [v for v in crdgen.crd_for(entry)["spec"]["versions"] if v["storage"]]
    schema: dict[str, Any] = storage["schema"]["openAPIV3Schema"]
    return schema


# --- drift -------------------------------------------------------------------------------------


def test_committed_crds_match_the_models() -> None:
    problems = crdgen.find_drift(CRD_DIR, crdgen.render_all())
    assert problems == [], (
        "deploy/crds is out of date; run `uv run python -m klt_common.structs.crdgen "
        "--out deploy/crds`:\n" + "\n".join(problems)
    )


def test_check_cli_passes_on_the_committed_files(capsys: pytest.CaptureFixture[str]) -> None:
    assert crdgen.main(["--check", "--out", str(CRD_DIR)]) == 0
    assert "up to date" in capsys.readouterr().out


def test_a_model_change_without_regeneration_is_detected(monkeypatch: pytest.MonkeyPatch) -> None:
    class ChangedSpec(options.KeptnConfigSpec):
        brand_new_setting: str | None = None

    class ChangedConfig(options.KeptnConfig):
        spec: ChangedSpec = Field(default_factory=ChangedSpec)

    changed = dataclasses.replace(api.by_kind("KeptnConfig"), model=ChangedConfig)
    original = api.resource_kinds()
    monkeypatch.setattr(
        api,
        "resource_kinds",
        lambda: tuple(changed if entry.kind == "KeptnConfig" else entry for entry in original),
    )
    problems = crdgen.find_drift(CRD_DIR, crdgen.render_all())
    assert len(problems) == 1
    assert problems[0].startswith(f"changed: {CRD_DIR / 'options.keptn.sh_keptnconfigs.yaml'}")
    assert "+              brandNewSetting:" in problems[0]


def test_cli_writes_then_checks_then_reports_every_kind_of_drift(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "crds"
    assert crdgen.main(["--check", "--out", str(out)]) == 1
    assert crdgen.main(["--out", str(out)]) == 0
    assert sorted(path.name for path in out.iterdir()) == sorted(crdgen.render_all())
    assert crdgen.main(["--check", "--out", str(out)]) == 0

    (out / "lifecycle.keptn.sh_keptnapps.yaml").write_text("# edited by hand\n")
    (out / "metrics.keptn.sh_analyses.yaml").unlink()
    stale = out / "lifecycle.keptn.sh_keptnworkloadinstances.yaml"
    stale.write_text(crdgen.render_all()["lifecycle.keptn.sh_keptnapps.yaml"])
    (out / "README.yaml").write_text("not generated: left alone\n")
    capsys.readouterr()

    assert crdgen.main(["--check", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "3 CRD file(s)" in err
    assert "changed:" in err
    assert "lifecycle.keptn.sh_keptnapps.yaml" in err
    assert "missing:" in err
    assert "metrics.keptn.sh_analyses.yaml" in err
    assert "stale:" in err
    assert "README.yaml" not in err

    assert crdgen.main(["--out", str(out)]) == 0
    assert not stale.exists()
    assert (out / "README.yaml").exists()
    assert crdgen.main(["--check", "--out", str(out)]) == 0


def test_rendering_is_deterministic() -> None:
    assert crdgen.render_all() == crdgen.render_all()


@pytest.mark.parametrize("entry", KINDS, ids=_kind_id)
def test_committed_file_parses_back_to_the_generated_crd(entry: api.ResourceKind) -> None:
    text = (CRD_DIR / crdgen.file_name(entry)).read_text(encoding="utf-8")
    assert text.startswith("# Generated by")
    assert yaml.safe_load(text) == crdgen.crd_for(entry)


def test_file_names_follow_group_and_plural() -> None:
    assert crdgen.file_name(api.by_kind("KeptnApp")) == "lifecycle.keptn.sh_keptnapps.yaml"
    assert crdgen.file_name(api.by_kind("KeptnConfig")) == "options.keptn.sh_keptnconfigs.yaml"


# --- shape of each CRD -------------------------------------------------------------------------


@pytest.mark.parametrize("entry", KINDS, ids=_kind_id)
def test_every_version_schema_is_structural(entry: api.ResourceKind) -> None:
    for version in crdgen.crd_for(entry)["spec"]["versions"]:
        schema = version["schema"]["openAPIV3Schema"]
        assert root_problems(schema) == [], version["name"]


@pytest.mark.parametrize("entry", KINDS, ids=_kind_id)
def test_only_free_form_nodes_preserve_unknown_fields_in_v1(entry: api.ResourceKind) -> None:
    found: list[str] = []

    def walk(node: dict[str, Any], path: str) -> None:
        if node.get("x-kubernetes-preserve-unknown-fields"):
            found.append(path)
        for name, child in node.get("properties", {}).items():
            walk(child, f"{path}.{name}")
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], f"{path}.*")
        if "items" in node:
            walk(node["items"], f"{path}[]")

    walk(_storage_schema(entry), "")
    expected = [".spec.container"] if entry.kind == "KeptnTaskDefinition" else []
    assert found == expected


@pytest.mark.parametrize("entry", KINDS, ids=_kind_id)
def test_served_versions_match_keptns(entry: api.ResourceKind) -> None:
    versions = crdgen.crd_for(entry)["spec"]["versions"]
    assert [v["name"] for v in versions] == SERVED[entry.kind]
    assert all(v["served"] for v in versions)
    assert [v["name"] for v in versions if v["storage"]] == [entry.version]
    assert all(v["subresources"] == {"status": {}} for v in versions)


@pytest.mark.parametrize("entry", KINDS, ids=_kind_id)
def test_old_versions_accept_any_spec_and_status(entry: api.ResourceKind) -> None:
    for version in crdgen.crd_for(entry)["spec"]["versions"]:
        if version["storage"]:
            continue
        properties = version["schema"]["openAPIV3Schema"]["properties"]
        assert properties["spec"] == {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
        }
        status = properties["status"]
        assert status.get("x-kubernetes-preserve-unknown-fields") or status == {"type": "string"}


@pytest.mark.parametrize("entry", KINDS, ids=_kind_id)
def test_names_scope_and_conversion(entry: api.ResourceKind) -> None:
    crd = crdgen.crd_for(entry)
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == entry.crd_name
    spec = crd["spec"]
    assert spec["group"] == entry.group
    assert spec["scope"] == "Namespaced"
    assert spec["conversion"] == crdgen.conversion_for(entry)
    names = spec["names"]
    assert names["kind"] == entry.kind
    assert names["listKind"] == f"{entry.kind}List"
    assert names["plural"] == entry.plural
    assert names["singular"] == entry.singular
    assert names.get("shortNames", []) == list(entry.short_names)
    assert "keptn" in names["categories"]


def _resolves(schema: dict[str, Any], json_path: str) -> bool:
    node: dict[str, Any] = schema
    for part in json_path.lstrip(".").split("."):
        properties = node.get("properties", {})
        if part not in properties:
            # metadata is a bare object in the schema; only its timestamp is ever printed
            return part == "creationTimestamp" and node == {"type": "object"}
        node = properties[part]
    return True


@pytest.mark.parametrize("entry", KINDS, ids=_kind_id)
def test_printer_columns_point_at_real_fields(entry: api.ResourceKind) -> None:
    schema = _storage_schema(entry)
    for version in crdgen.crd_for(entry)["spec"]["versions"]:
        for column in version.get("additionalPrinterColumns", []):
            assert _resolves(schema, column["jsonPath"]), column


_DEFAULT_COLUMNS = {
    "KeptnAppVersion": ["AppName", "Version", "Phase", "Status"],
    "KeptnWorkloadVersion": ["AppName", "WorkloadName", "WorkloadVersion", "Phase", "Status"],
    "KeptnTask": [
        "AppName",
        "AppVersion",
        "WorkloadName",
        "WorkloadVersion",
        "Job Name",
        "Status",
    ],
    "KeptnEvaluation": [
        "AppName",
        "AppVersion",
        "WorkloadName",
        "WorkloadVersion",
        "RetryCount",
        "EvaluationStatus",
        "OverallStatus",
    ],
    "KeptnMetric": ["Provider", "Query", "Interval", "Value", "Step", "Aggregation"],
    "Analysis": ["AnalysisDefinition", "State", "Warning", "Pass"],
    "KeptnWorkload": ["AppName", "Version"],
}


@pytest.mark.parametrize(("kind", "columns"), sorted(_DEFAULT_COLUMNS.items()))
def test_keptns_default_columns_are_printed(kind: str, columns: list[str]) -> None:
    v1 = crdgen.crd_for(api.by_kind(kind))["spec"]["versions"][0]
    printed = [c["name"] for c in v1["additionalPrinterColumns"] if not c.get("priority")]
    assert printed == [*columns, "Age"]


@pytest.mark.parametrize(
    ("kind", "path", "default"),
    [
        ("KeptnApp", "spec.revision", 1),
        ("KeptnAppVersion", "spec.revision", 1),
        ("KeptnAppVersion", "status.status", "Pending"),
        ("KeptnAppVersion", "status.promotionStatus", "Pending"),
        ("KeptnWorkloadVersion", "status.deploymentStatus", "Pending"),
        ("KeptnTaskDefinition", "spec.retries", 10),
        ("KeptnTaskDefinition", "spec.timeout", "5m"),
        ("KeptnTaskDefinition", "spec.ttlSecondsAfterFinished", 300),
        ("KeptnTask", "spec.retries", 10),
        ("KeptnTask", "spec.timeout", "5m"),
        ("KeptnTask", "status.status", "Pending"),
        ("KeptnEvaluationDefinition", "spec.retries", 10),
        ("KeptnEvaluationDefinition", "spec.retryInterval", "5s"),
        ("KeptnEvaluation", "spec.retryInterval", "5s"),
        ("KeptnEvaluation", "status.retryCount", 0),
        ("KeptnEvaluation", "status.overallStatus", "Pending"),
        ("KeptnMetric", "spec.range.interval", "5m"),
        ("KeptnMetricsProvider", "spec.insecureSkipTlsVerify", False),
        ("KeptnConfig", "spec.keptnAppCreationRequestTimeoutSeconds", 30),
        ("KeptnConfig", "spec.blockDeployment", True),
        ("KeptnConfig", "spec.observabilityTimeout", "5m"),
    ],
)
def test_crd_defaults_are_keptns(kind: str, path: str, default: object) -> None:
    node = _storage_schema(api.by_kind(kind))
    for part in path.split("."):
        node = node["properties"][part]
    assert node["default"] == default


def test_item_status_and_objective_defaults_inside_lists() -> None:
    app_version = _storage_schema(api.by_kind("KeptnAppVersion"))
    item = app_version["properties"]["status"]["properties"]["preDeploymentTaskStatus"]["items"]
    assert item["properties"]["status"]["default"] == "Pending"
    definition = _storage_schema(api.by_kind("AnalysisDefinition"))
    objective = definition["properties"]["spec"]["properties"]["objectives"]["items"]
    assert objective["properties"]["weight"]["default"] == 1
    assert objective["properties"]["keyObjective"]["default"] is False


@pytest.mark.parametrize(
    ("kind", "path", "required"),
    [
        ("KeptnApp", "spec", ["version"]),
        ("KeptnAppVersion", "spec", ["appName", "version"]),
        ("KeptnWorkloadVersion", "spec", ["app", "resourceReference", "version", "workloadName"]),
        ("KeptnTask", "spec", ["taskDefinition"]),
        ("KeptnEvaluation", "spec", ["evaluationDefinition", "workloadVersion"]),
        ("KeptnEvaluation", "status", ["evaluationStatus", "overallStatus", "retryCount"]),
        ("KeptnMetric", "spec", ["fetchIntervalSeconds", "provider", "query"]),
        ("KeptnMetricsProvider", "spec", ["targetServer"]),
        ("Analysis", "spec", ["analysisDefinition", "timeframe"]),
        ("Analysis", "status", ["state", "timeframe"]),
        ("AnalysisDefinition", "spec", ["totalScore"]),
        ("AnalysisValueTemplate", "spec", ["provider", "query"]),
    ],
)
def test_required_fields_are_keptns(kind: str, path: str, required: list[str]) -> None:
    node = _storage_schema(api.by_kind(kind))["properties"][path]
    assert node["required"] == required


def test_task_container_schema_is_free_form_with_a_required_name() -> None:
    container = _storage_schema(api.by_kind("KeptnTaskDefinition"))["properties"]["spec"][
        "properties"
    ]["container"]
    assert container["x-kubernetes-preserve-unknown-fields"] is True
    assert container["required"] == ["name"]
    assert structural_problems(container) == []


def test_quantities_are_int_or_string() -> None:
    schema = _storage_schema(api.by_kind("AnalysisDefinition"))
    operator = schema["properties"]["spec"]["properties"]["objectives"]["items"]["properties"][
        "target"
    ]["properties"]["failure"]["properties"]
    assert operator["lessThan"]["properties"]["fixedValue"] == {
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "x-kubernetes-int-or-string": True,
    }
    assert operator["inRange"]["required"] == ["highBound", "lowBound"]


def test_structural_checker_catches_non_structural_schemas() -> None:
    assert structural_problems({"properties": {"a": {"type": "string"}}})
    assert structural_problems({"type": "object", "properties": {"a": {"$ref": "#/x"}}})
    assert structural_problems(
        {"type": "object", "properties": {"a": {"anyOf": [{"type": "string"}, {"type": "null"}]}}}
    )
    assert structural_problems({"type": "array"})
    assert structural_problems(
        {"type": "object", "properties": {}, "additionalProperties": {"type": "string"}}
    )
    assert structural_problems({"type": "string", "default": 3})
    metadata = {"type": "object", "properties": {"x": {"type": "string"}}}
    assert root_problems({"type": "object", "properties": {"metadata": metadata}})
