"""The manifest fixtures are valid for the CRDs we generate, and v1 ones load into the models.

Integration tests ``kubectl apply`` these files; checking them here first means a broken
fixture fails in a second, not after a cluster came up.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from crd_schema_tools import apply_defaults, validation_problems

from klt_common.structs import api, crdgen

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "manifests"


def _documents() -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    for path in sorted(FIXTURES.rglob("*.yaml")):
        for index, doc in enumerate(yaml.safe_load_all(path.read_text(encoding="utf-8"))):
            if doc is not None:
                found.append((f"{path.relative_to(FIXTURES)}#{index}", doc))
    return found


DOCUMENTS = _documents()
V1_DOCUMENTS = [(name, doc) for name, doc in DOCUMENTS if name.startswith("v1/")]
LEGACY_DOCUMENTS = [(name, doc) for name, doc in DOCUMENTS if name.startswith("legacy/")]


def _version_schema(doc: dict[str, Any]) -> tuple[api.ResourceKind, dict[str, Any]]:
    entry = api.by_kind(doc["kind"])
    group, version = doc["apiVersion"].split("/")
    assert group == entry.group
    served = {v["name"]: v for v in crdgen.crd_for(entry)["spec"]["versions"]}
    assert version in served, f"{doc['kind']} is not served at {version}"
    return entry, served[version]["schema"]["openAPIV3Schema"]


def _ids(documents: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [name for name, _ in documents]


def test_there_are_fixtures_in_both_folders() -> None:
    assert len(V1_DOCUMENTS) >= 15
    assert len(LEGACY_DOCUMENTS) >= 8
    assert len(V1_DOCUMENTS) + len(LEGACY_DOCUMENTS) == len(DOCUMENTS)


@pytest.mark.parametrize(("name", "doc"), DOCUMENTS, ids=_ids(DOCUMENTS))
def test_fixture_is_valid_for_the_crd_version_it_names(name: str, doc: dict[str, Any]) -> None:
    _, schema = _version_schema(doc)
    assert validation_problems(schema, doc) == []


@pytest.mark.parametrize(("name", "doc"), DOCUMENTS, ids=_ids(DOCUMENTS))
def test_fixture_leaves_the_namespace_to_the_test(name: str, doc: dict[str, Any]) -> None:
    assert "namespace" not in doc["metadata"]


@pytest.mark.parametrize(("name", "doc"), V1_DOCUMENTS, ids=_ids(V1_DOCUMENTS))
def test_v1_fixture_loads_into_its_model_without_unknown_fields(
    name: str, doc: dict[str, Any]
) -> None:
    entry, schema = _version_schema(doc)
    assert doc["apiVersion"] == entry.api_version
    model = api.parse_resource(doc)
    assert type(model) is entry.model
    assert api.unknown_fields(model) == []
    assert model.to_manifest() == apply_defaults(schema, doc)


def test_names_are_unique_per_kind() -> None:
    counts = Counter((doc["kind"], doc["metadata"]["name"]) for _, doc in DOCUMENTS)
    assert [key for key, count in counts.items() if count > 1] == []


def test_v1_fixtures_cover_the_user_facing_kinds() -> None:
    kinds = {doc["kind"] for _, doc in V1_DOCUMENTS}
    assert kinds >= {
        "KeptnApp",
        "KeptnAppContext",
        "KeptnTaskDefinition",
        "KeptnTask",
        "KeptnEvaluationDefinition",
        "KeptnMetric",
        "KeptnMetricsProvider",
        "Analysis",
        "AnalysisDefinition",
        "AnalysisValueTemplate",
        "KeptnConfig",
    }


def test_v1_task_definitions_cover_every_runtime_form() -> None:
    forms: set[str] = set()
    for _, doc in V1_DOCUMENTS:
        if doc["kind"] != "KeptnTaskDefinition":
            continue
        spec = api.KeptnTaskDefinition.model_validate(doc).spec
        if spec.container is not None:
            forms.add("container")
        for runtime_name, runtime in (("deno", spec.deno), ("python", spec.python)):
            if runtime is None:
                continue
            for source in ("inline", "http_ref", "function_ref", "config_map_ref"):
                if getattr(runtime, source) is not None:
                    forms.add(f"{runtime_name}.{source}")
            if runtime.parameters is not None:
                forms.add(f"{runtime_name}.parameters")
            if runtime.secure_parameters is not None:
                forms.add(f"{runtime_name}.secure_parameters")
    assert forms >= {
        "container",
        "deno.inline",
        "deno.secure_parameters",
        "deno.function_ref",
        "deno.parameters",
        "deno.http_ref",
        "deno.config_map_ref",
        "python.inline",
        "python.http_ref",
    }


def test_legacy_fixtures_span_the_seed_versions() -> None:
    versions = {doc["apiVersion"].split("/")[1] for _, doc in LEGACY_DOCUMENTS}
    assert versions == {"v1alpha1", "v1alpha2", "v1alpha3"}
    assert all(doc["kind"] in {"KeptnApp", "KeptnTaskDefinition"} for _, doc in LEGACY_DOCUMENTS)
