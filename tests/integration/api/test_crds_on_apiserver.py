"""The generated CRDs on the real apiserver: they are Established, Keptn's manifests are
accepted (v1 and the seeds' older versions), and objects round-trip through the models with
their status subresource.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from klt_common.clients import cluster as k8s
from klt_common.structs import api

MANIFESTS = Path(__file__).resolve().parents[2] / "fixtures" / "manifests"
V1 = sorted((MANIFESTS / "v1").glob("*.yaml"))
LEGACY = sorted((MANIFESTS / "legacy").glob("*.yaml"))


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


async def test_every_generated_crd_is_established(cluster: k8s.ClusterClient) -> None:
    installed = {crd["metadata"]["name"]: crd for crd in (await cluster.list(k8s.CRDS)).items}
    for kind in api.resource_kinds():
        crd = installed.get(kind.crd_name)
        assert crd is not None, f"{kind.crd_name} is not installed"
        conditions = {c["type"]: c["status"] for c in crd["status"].get("conditions", [])}
        assert conditions.get("Established") == "True", kind.crd_name
        storage = [v["name"] for v in crd["spec"]["versions"] if v["storage"]]
        assert storage == [kind.version]


@pytest.mark.parametrize("path", V1 + LEGACY, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_keptn_manifests_are_accepted_by_kubectl_apply(path: Path, namespace: str) -> None:
    result = subprocess.run(
        ["kubectl", "apply", "-n", namespace, "-f", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("path", V1, ids=lambda p: p.name)
async def test_v1_manifests_read_back_through_the_models(
    path: Path, cluster: k8s.ClusterClient, namespace: str
) -> None:
    for doc in _docs(path):
        resource = k8s.keptn_resource(doc["kind"])
        stored = await cluster.create(resource, doc, namespace)
        model = api.parse_resource(stored)
        assert api.unknown_fields(model) == []
        dumped = model.model_dump(mode="json", by_alias=True, exclude_none=True)
        assert dumped["spec"] == stored["spec"]


STATUSES: dict[str, dict[str, Any]] = {
    "KeptnApp": {"currentVersion": "0.1.0"},
    "KeptnTask": {
        "jobName": "pre-task-1-abcde",
        "status": "Failed",
        "reason": "BackoffLimitExceeded",
        "message": "Job has reached the specified backoff limit",
        "startTime": "2026-01-02T03:04:05Z",
        "endTime": "2026-01-02T03:05:05Z",
    },
    "KeptnMetric": {
        "value": "42",
        "rawValue": "NDI=",
        "lastUpdated": "2026-01-02T03:04:05Z",
    },
}


@pytest.mark.parametrize("kind", sorted(STATUSES))
async def test_status_round_trips_through_the_status_subresource(
    kind: str, cluster: k8s.ClusterClient, namespace: str
) -> None:
    fixture = next(doc for path in V1 for doc in _docs(path) if doc["kind"] == kind)
    # Labels no running task-runner or evaluator serves: this test is about the status
    # subresource, and a controller writing the same status meanwhile would race it.
    fixture["metadata"].setdefault("labels", {}).update(
        {"klt.dev/runner-class": "no-runner", "evaluator.klt.sh/shard": "no-evaluator"}
    )
    access = k8s.typed(cluster, kind)
    created = await access.create(api.parse_resource(fixture), namespace)
    model_cls = type(created)
    with_status = model_cls.model_validate(
        {
            **created.model_dump(mode="json", by_alias=True, exclude_none=True),
            "status": STATUSES[kind],
        }
    )
    written = await access.replace_status(with_status)
    read = await access.get(created.metadata.name or "", namespace)
    assert (
        read.model_dump(mode="json", by_alias=True, exclude_none=True)["status"]
        == (written.model_dump(mode="json", by_alias=True, exclude_none=True)["status"])
    )
    for key, value in STATUSES[kind].items():
        assert read.model_dump(mode="json", by_alias=True)["status"][key] == value
