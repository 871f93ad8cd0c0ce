"""Conversion through the real apiserver, served by the dev stack's webhook process.

The CRDs can name only one conversion webhook, so these tests use the stack's (started by the
``stack_webhook`` fixture if need be) and their own namespace each.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml
from webhook_testkit import TASK_DEFINITIONS, at_version, definition, wait_for

from klt_common.clients import cluster as k8s
from klt_common.structs import api, crdgen
from klt_webhook.conversion import PRESERVED

LEGACY = Path(__file__).resolve().parents[2] / "fixtures" / "manifests" / "legacy"
APPS = k8s.keptn_resource("KeptnApp")


def _load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((LEGACY / name).read_text())
    return doc


@pytest.fixture(scope="module")
async def conversion_ready(cluster: k8s.ClusterClient) -> None:
    """Every multi-version CRD converts through the stack's webhook, with its CA bundle."""

    async def ready() -> bool:
        crds = {c["metadata"]["name"]: c for c in (await cluster.list(k8s.CRDS)).items}
        for kind in api.resource_kinds():
            if len(crdgen.served_versions(kind)) < 2:
                continue
            conversion = crds[kind.crd_name]["spec"]["conversion"]
            config = conversion.get("webhook", {}).get("clientConfig", {})
            if conversion["strategy"] != "Webhook" or "caBundle" not in config:
                return False
        return True

    await wait_for(ready, what="the stack's webhook to take over CRD conversion")


pytestmark = [pytest.mark.usefixtures("stack_webhook", "conversion_ready")]


async def test_a_v1alpha3_definition_reads_back_as_v1_with_deno(
    cluster: k8s.ClusterClient, namespace: str
) -> None:
    manifest = _load("v1alpha3-taskdefinition-deployment-hello.yaml")
    old = at_version(TASK_DEFINITIONS, "v1alpha3")
    created = await cluster.create(old, manifest, namespace)
    assert created["apiVersion"] == "lifecycle.keptn.sh/v1alpha3"
    assert created["spec"]["function"] == manifest["spec"]["function"]

    name = manifest["metadata"]["name"]
    stored = await cluster.get(TASK_DEFINITIONS, name, namespace)
    assert stored["apiVersion"] == "lifecycle.keptn.sh/v1"
    assert stored["spec"]["deno"] == manifest["spec"]["function"]
    assert "function" not in stored["spec"]
    # The v1 object is a valid v1 object as far as the models are concerned.
    assert api.unknown_fields(api.parse_resource(stored)) == []
    # Read at its own version it is what was written (plus the defaults the CRD fills in).
    again = await cluster.get(old, name, namespace)
    assert again["spec"] == {
        **manifest["spec"],
        "retries": 10,
        "timeout": "5m",
        "ttlSecondsAfterFinished": 300,
    }


async def test_a_v1_definition_reads_back_at_old_versions_with_equivalent_fields(
    cluster: k8s.ClusterClient, namespace: str
) -> None:
    spec = {
        "deno": {"inline": {"code": "console.log('hi')"}, "parameters": {"map": {"a": "b"}}},
        "retries": 2,
    }
    await cluster.create(TASK_DEFINITIONS, definition("v1-def", spec), namespace)

    v1alpha3 = await cluster.get(at_version(TASK_DEFINITIONS, "v1alpha3"), "v1-def", namespace)
    assert v1alpha3["spec"]["deno"] == spec["deno"]
    assert v1alpha3["spec"]["retries"] == 2

    v1alpha1 = await cluster.get(at_version(TASK_DEFINITIONS, "v1alpha1"), "v1-def", namespace)
    assert v1alpha1["spec"] == {"function": spec["deno"]}
    assert json.loads(v1alpha1["metadata"]["annotations"][PRESERVED])["spec"] == {"retries": 2}

    # A list at an old version converts every item too.
    listed = await cluster.list(at_version(TASK_DEFINITIONS, "v1alpha2"), namespace)
    assert [item["spec"] for item in listed.items] == [{"function": spec["deno"]}]


async def test_an_update_at_an_old_version_keeps_what_it_cannot_show(
    cluster: k8s.ClusterClient, namespace: str
) -> None:
    await cluster.create(
        TASK_DEFINITIONS,
        definition("kept", {"deno": {"inline": {"code": "1"}}, "retries": 4}),
        namespace,
    )
    old = at_version(TASK_DEFINITIONS, "v1alpha1")

    def change_code(obj: k8s.Body) -> k8s.Body:
        obj["spec"]["function"]["inline"]["code"] = "2"
        return obj

    await cluster.update(old, "kept", namespace, change_code)
    stored = await cluster.get(TASK_DEFINITIONS, "kept", namespace)
    assert stored["spec"]["deno"] == {"inline": {"code": "2"}}
    assert stored["spec"]["retries"] == 4, "a field v1alpha1 cannot show survived its update"
    assert PRESERVED not in stored["metadata"].get("annotations", {})


async def test_a_v1alpha1_apps_checks_survive_a_round_trip(
    cluster: k8s.ClusterClient, namespace: str
) -> None:
    manifest = _load("v1alpha1-keptnapp-podtato-head.yaml")
    name = manifest["metadata"]["name"]
    await cluster.create(at_version(APPS, "v1alpha1"), manifest, namespace)
    stored = await cluster.get(APPS, name, namespace)
    # v1 has no app-level checks (they live in KeptnAppContext); they wait in the annotation.
    assert stored["spec"] == {
        "version": manifest["spec"]["version"],
        "workloads": manifest["spec"]["workloads"],
        "revision": 1,
    }
    preserved = json.loads(stored["metadata"]["annotations"][PRESERVED])
    assert preserved["spec"]["postDeploymentTasks"] == ["post-deployment-hello"]
    back = await cluster.get(at_version(APPS, "v1alpha1"), name, namespace)
    assert back["spec"] == manifest["spec"]


async def test_the_crds_trust_the_certificate_the_webhook_serves(
    cluster: k8s.ClusterClient,
) -> None:
    crd = await cluster.get(k8s.CRDS, TASK_DEFINITIONS.plural + "." + TASK_DEFINITIONS.group)
    config = crd["spec"]["conversion"]["webhook"]["clientConfig"]
    assert crd["spec"]["conversion"]["webhook"]["conversionReviewVersions"] == ["v1"]
    assert "service" not in config
    url = urllib.parse.urlsplit(config["url"])
    assert url.path == "/convert"
    context = ssl.create_default_context(cadata=base64.b64decode(config["caBundle"]).decode())
    _, writer = await asyncio.open_connection(
        url.hostname, url.port, ssl=context, server_hostname=url.hostname
    )
    writer.close()
    await writer.wait_closed()
