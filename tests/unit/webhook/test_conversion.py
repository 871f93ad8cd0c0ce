"""Conversion between Keptn's served versions and v1.

Covered: the seeds' legacy manifests convert to the v1 layout and back exactly; every v1
fixture goes down to every served version and back; the field mappings Keptn users rely on
(``function`` ↔ ``deno``, app-level checks, provider-query objectives); preserved fields give
way to edits made in the other version; errors name what is wrong; and, for arbitrary specs of
every kind and version, old → v1 → old is the identity and v1 → old → v1 is too, up to the
values the apiserver defaults.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from klt_common.structs import api, crdgen
from klt_webhook import conversion
from klt_webhook.conversion import PRESERVED, ConversionError, convert

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "manifests"


def _docs(folder: str) -> list[dict[str, Any]]:
    found = []
    for path in sorted((FIXTURES / folder).glob("*.yaml")):
        found.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return found


LEGACY = _docs("legacy")
V1 = [doc for doc in _docs("v1") if len(crdgen.served_versions(api.by_kind(doc["kind"]))) > 1]


def _id(doc: dict[str, Any]) -> str:
    return f"{doc['apiVersion'].split('/')[1]}-{doc['kind']}-{doc['metadata']['name']}"


def _v1(api_version: str) -> str:
    return api_version.split("/")[0] + "/v1"


# --- the seeds' manifests ----------------------------------------------------------------------


@pytest.mark.parametrize("doc", LEGACY, ids=_id)
def test_a_legacy_manifest_goes_to_v1_and_back_unchanged(doc: dict[str, Any]) -> None:
    original = copy.deepcopy(doc)
    stored = convert(doc, _v1(doc["apiVersion"]))
    assert doc == original, "the input must not be modified"
    assert stored["apiVersion"] == _v1(doc["apiVersion"])
    assert convert(stored, doc["apiVersion"]) == original


@pytest.mark.parametrize("doc", LEGACY, ids=_id)
def test_a_legacy_manifest_reads_as_a_valid_v1_object(doc: dict[str, Any]) -> None:
    stored = convert(doc, _v1(doc["apiVersion"]))
    model = api.parse_resource(stored)
    assert api.unknown_fields(model) == []


@pytest.mark.parametrize("doc", [d for d in LEGACY if d["kind"] == "KeptnTaskDefinition"], ids=_id)
def test_a_legacy_function_becomes_deno(doc: dict[str, Any]) -> None:
    stored = convert(doc, "lifecycle.keptn.sh/v1")
    assert stored["spec"] == {"deno": doc["spec"]["function"]}


def test_a_v1alpha1_apps_checks_travel_in_an_annotation() -> None:
    (app,) = [d for d in LEGACY if d["kind"] == "KeptnApp"]
    stored = convert(app, "lifecycle.keptn.sh/v1")
    assert stored["spec"] == {"version": "1.3", "workloads": app["spec"]["workloads"]}
    preserved = json.loads(stored["metadata"]["annotations"][PRESERVED])
    assert preserved == {
        "from": "lifecycle.keptn.sh/v1alpha1",
        "spec": {
            "postDeploymentTasks": ["post-deployment-hello"],
            "preDeploymentEvaluations": ["my-prometheus-definition"],
        },
    }
    # v1alpha3 still had app-level checks, so they show there too.
    at_v1alpha3 = convert(stored, "lifecycle.keptn.sh/v1alpha3")
    assert at_v1alpha3["spec"]["postDeploymentTasks"] == ["post-deployment-hello"]
    assert "annotations" not in at_v1alpha3["metadata"]


# --- v1 objects at every served version --------------------------------------------------------


def _normalised(obj: dict[str, Any]) -> dict[str, Any]:
    """The object as the apiserver would store it: through the v1 model, defaults filled in."""
    return api.parse_resource(obj).to_manifest()


@pytest.mark.parametrize("doc", V1, ids=_id)
def test_a_v1_object_survives_every_served_version(doc: dict[str, Any]) -> None:
    kind = api.by_kind(doc["kind"])
    for version in crdgen.served_versions(kind)[1:]:
        old = convert(doc, f"{kind.group}/{version}")
        assert old["apiVersion"] == f"{kind.group}/{version}"
        back = convert(old, kind.api_version)
        assert _normalised(back) == _normalised(doc), version


def test_a_v1_deno_definition_reads_as_deno_at_v1alpha3_and_as_function_at_v1alpha1() -> None:
    doc = {
        "apiVersion": "lifecycle.keptn.sh/v1",
        "kind": "KeptnTaskDefinition",
        "metadata": {"name": "hello"},
        "spec": {"deno": {"inline": {"code": "console.log(1)"}}, "retries": 3},
    }
    assert convert(doc, "lifecycle.keptn.sh/v1alpha3")["spec"] == doc["spec"]
    at_v1alpha1 = convert(doc, "lifecycle.keptn.sh/v1alpha1")
    assert at_v1alpha1["spec"] == {"function": {"inline": {"code": "console.log(1)"}}}
    # v1alpha1 had no retries: the value travels in the annotation and comes back.
    assert json.loads(at_v1alpha1["metadata"]["annotations"][PRESERVED])["spec"] == {"retries": 3}
    assert convert(at_v1alpha1, "lifecycle.keptn.sh/v1") == doc


def test_a_python_definition_read_at_v1alpha1_keeps_its_python_in_the_annotation() -> None:
    doc = {
        "apiVersion": "lifecycle.keptn.sh/v1",
        "kind": "KeptnTaskDefinition",
        "metadata": {"name": "py", "annotations": {"team": "a"}},
        "spec": {"python": {"inline": {"code": "print(1)"}}},
    }
    old = convert(doc, "lifecycle.keptn.sh/v1alpha1")
    assert old["spec"] == {}
    assert old["metadata"]["annotations"]["team"] == "a"
    assert convert(old, "lifecycle.keptn.sh/v1") == doc


def test_a_function_written_at_v1alpha3_is_read_back_as_function() -> None:
    doc = {
        "apiVersion": "lifecycle.keptn.sh/v1alpha3",
        "kind": "KeptnTaskDefinition",
        "metadata": {"name": "f"},
        "spec": {"function": {"httpRef": {"url": "https://example.com/f.ts"}}, "retries": 2},
    }
    stored = convert(doc, "lifecycle.keptn.sh/v1")
    assert stored["spec"]["deno"] == doc["spec"]["function"]
    assert (
        convert(stored, "lifecycle.keptn.sh/v1beta1")["spec"]["function"]
        == (doc["spec"]["function"])
    )
    assert convert(stored, "lifecycle.keptn.sh/v1alpha3") == doc


def test_old_to_old_goes_through_v1() -> None:
    (app,) = [d for d in LEGACY if d["kind"] == "KeptnApp"]
    at_v1alpha3 = convert(app, "lifecycle.keptn.sh/v1alpha3")
    assert at_v1alpha3["apiVersion"] == "lifecycle.keptn.sh/v1alpha3"
    assert at_v1alpha3["spec"] == app["spec"]


def test_provider_objectives_become_metric_references_and_come_back() -> None:
    doc = {
        "apiVersion": "lifecycle.keptn.sh/v1alpha1",
        "kind": "KeptnEvaluationDefinition",
        "metadata": {"name": "ed"},
        "spec": {
            "source": "prometheus",
            "objectives": [{"name": "cpu", "query": "sum(rate(x[1m]))", "evaluationTarget": "<1"}],
        },
    }
    stored = convert(doc, "lifecycle.keptn.sh/v1")
    assert stored["spec"]["objectives"] == [
        {"evaluationTarget": "<1", "keptnMetricRef": {"name": "cpu"}}
    ]
    assert convert(stored, "lifecycle.keptn.sh/v1alpha1") == doc
    # An edit made at v1 wins over the preserved query, which no longer matches.
    stored["spec"]["objectives"][0]["evaluationTarget"] = "<2"
    edited = convert(stored, "lifecycle.keptn.sh/v1alpha1")
    assert edited["spec"]["objectives"] == [{"name": "cpu", "query": "", "evaluationTarget": "<2"}]
    assert edited["spec"]["source"] == "prometheus"


def test_a_damaged_annotation_is_ignored() -> None:
    doc = {
        "apiVersion": "lifecycle.keptn.sh/v1",
        "kind": "KeptnApp",
        "metadata": {"name": "a", "annotations": {PRESERVED: "{not json"}},
        "spec": {"version": "1"},
    }
    old = convert(doc, "lifecycle.keptn.sh/v1alpha1")
    assert old["spec"] == {"version": "1"}
    assert "annotations" not in old["metadata"]


def test_same_version_is_a_copy() -> None:
    doc = {"apiVersion": "metrics.keptn.sh/v1", "kind": "Analysis", "metadata": {}, "spec": {}}
    result = convert(doc, "metrics.keptn.sh/v1")
    assert result == doc
    assert result is not doc


@pytest.mark.parametrize(
    ("obj", "target", "message"),
    [
        pytest.param(
            {"apiVersion": "v1", "kind": "Pod"}, "v1", "not a klt resource", id="foreign-kind"
        ),
        pytest.param(
            {"apiVersion": "lifecycle.keptn.sh/v1", "kind": "KeptnApp"},
            "lifecycle.keptn.sh/v1alpha9",
            "not lifecycle.keptn.sh/v1alpha9",
            id="unserved-target",
        ),
        pytest.param(
            {"apiVersion": "metrics.keptn.sh/v1", "kind": "KeptnApp"},
            "lifecycle.keptn.sh/v1",
            "not metrics.keptn.sh/v1",
            id="wrong-group",
        ),
        pytest.param(
            {"apiVersion": "v1", "kind": "KeptnApp"},
            "lifecycle.keptn.sh/v1",
            "is not of the form",
            id="no-group",
        ),
        pytest.param(
            {"apiVersion": "metrics.keptn.sh/v1alpha1", "kind": "KeptnMetricsProvider"},
            "metrics.keptn.sh/v1",
            "not metrics.keptn.sh/v1alpha1",
            id="version-the-kind-never-had",
        ),
    ],
)
def test_errors_say_what_is_wrong(obj: dict[str, Any], target: str, message: str) -> None:
    with pytest.raises(ConversionError, match=message):
        convert(obj, target)


def test_every_old_version_in_the_table_is_served() -> None:
    served = conversion.convertible_kinds()
    for kind, versions in conversion.OLD_VERSIONS.items():
        assert set(versions) <= set(served[kind][1:]), kind


# --- properties --------------------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 20) | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(["name", "query", "code", "keptnMetricRef", "x"]), children, max_size=3
        )
    ),
    max_leaves=8,
)

_PAIRS = [
    (kind, version)
    for kind, versions in conversion.convertible_kinds().items()
    for version in versions[1:]
]


def _old_fields(kind: str, version: str) -> list[str]:
    old = conversion.OLD_VERSIONS.get(kind, {}).get(version)
    known = sorted(old.known) if old is not None and old.known is not None else []
    storage = sorted(conversion._storage(kind).known)
    return [*known, *storage, "function", "deno", "unknownField"]


@st.composite
def _old_objects(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    kind, version = draw(st.sampled_from(_PAIRS))
    group = api.by_kind(kind).group
    spec = draw(st.dictionaries(st.sampled_from(_old_fields(kind, version)), _json, max_size=5))
    obj = {
        "apiVersion": f"{group}/{version}",
        "kind": kind,
        "metadata": {"name": "x", "annotations": {"keep": "me"}},
        "spec": spec,
        "status": draw(_json),
    }
    return obj, f"{group}/v1"


@given(_old_objects())
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
def test_old_to_v1_to_old_is_the_identity(case: tuple[dict[str, Any], str]) -> None:
    obj, v1 = case
    stored = convert(obj, v1)
    assert convert(stored, obj["apiVersion"]) == obj


@st.composite
def _v1_objects(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    kind, version = draw(st.sampled_from(_PAIRS))
    entry = api.by_kind(kind)
    fields = sorted(conversion._storage(kind).known)
    spec = draw(st.dictionaries(st.sampled_from(fields), _json, max_size=5))
    obj = {"apiVersion": entry.api_version, "kind": kind, "metadata": {"name": "x"}, "spec": spec}
    return obj, f"{entry.group}/{version}"


@given(_v1_objects())
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
def test_v1_to_old_to_v1_keeps_everything_but_defaults(case: tuple[dict[str, Any], str]) -> None:
    obj, old_version = case
    back = convert(convert(obj, old_version), obj["apiVersion"])
    defaults = conversion._storage(obj["kind"]).defaults
    missing = {k: v for k, v in obj["spec"].items() if k not in back["spec"]}
    assert all(k in defaults and v == defaults[k] for k, v in missing.items()), missing
    assert back["spec"] == {k: v for k, v in obj["spec"].items() if k not in missing}
    assert back["metadata"] == obj["metadata"]
