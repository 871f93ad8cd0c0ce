"""The rendered chart passes the real apiserver's validation, for every value set.

Each value set of tests/unit/chart/chart_kit.VALUE_SETS is rendered into a dedicated namespace
and sent with ``kubectl apply --server-side --dry-run=server``: the apiserver (v1.34, RBAC on)
validates every object against its real schema (built-in kinds and the klt CRDs) and persists
nothing. Two exceptions, by design:

- **CRDs** exist already (the dev stack installs deploy/crds with its own conversion URL, which
  an apply would merge into an invalid url+service pair); each rendered CRD is validated as a
  dry-run *replace* of the installed one instead (same name, current resourceVersion);
- **kinds without CRDs here** (KEDA ScaledObject, prometheus-operator ServiceMonitor,
  cert-manager Certificate and Issuer) cannot be validated by this apiserver; they are skipped
  in the dry-run and checked against the local schemas of tests/unit/chart/foreign_kinds.py by
  tests/unit/chart/test_chart_render.py::test_foreign_kinds_match_their_local_schemas. If the
  stack ever serves one of those groups, its objects are dry-run too.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from chart_kit import FOREIGN_GROUPS, VALUE_SETS, render
from kube_kit import Kubectl

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

MANAGER = "klt-chart-test"


@pytest.fixture(scope="module")
def kubectl(kubectl_bin: Path, kubeconfig: str) -> Kubectl:
    return Kubectl(kubectl_bin, kubeconfig)


@pytest.fixture(scope="module")
def dry_namespace(kubectl: Kubectl) -> Iterator[str]:
    name = f"klt-dry-{uuid.uuid4().hex[:8]}"
    kubectl.run("create", "namespace", name)
    try:
        yield name
    finally:
        kubectl.run("delete", "namespace", name, "--wait=false", "--ignore-not-found")


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_rendered_chart_passes_server_side_validation(
    helm_bin: Path, kubectl: Kubectl, dry_namespace: str, value_set: str
) -> None:
    rendered = render(
        helm_bin, VALUE_SETS[value_set], release=dry_namespace, namespace=dry_namespace
    )
    served = kubectl.served_groups()
    crds, foreign, plain = [], [], []
    for doc in rendered.docs:
        group = doc["apiVersion"].split("/")[0] if "/" in doc["apiVersion"] else ""
        if doc["kind"] == "CustomResourceDefinition":
            crds.append(doc)
        elif group in FOREIGN_GROUPS and group not in served:
            foreign.append(doc)
        else:
            plain.append(doc)
    assert plain
    out = kubectl.apply(plain, dry_run=True, manager=MANAGER)
    assert out.count("(server dry run)") == len(plain), out

    if not crds:
        return
    listed = kubectl.get_json("customresourcedefinitions")
    assert listed is not None
    installed = {c["metadata"]["name"]: c for c in listed["items"]}
    missing = [c for c in crds if c["metadata"]["name"] not in installed]
    for crd in crds:
        if crd in missing:
            continue
        current = installed[crd["metadata"]["name"]]
        crd["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
    present = [c for c in crds if c not in missing]
    out = kubectl.run(
        "replace", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump_all(present)
    ).stdout
    assert out.count("(server dry run)") == len(present), out
    if missing:
        out = kubectl.run(
            "create", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump_all(missing)
        ).stdout
        assert out.count("(server dry run)") == len(missing), out


def test_dry_run_changed_nothing(kubectl: Kubectl, dry_namespace: str) -> None:
    """Nothing of the dry-runs exists: no cluster-scoped object carries the release's name."""
    for kind in ("clusterroles", "clusterrolebindings", "mutatingwebhookconfigurations"):
        listed = kubectl.get_json(kind, "-l", f"app.kubernetes.io/instance={dry_namespace}")
        assert listed is not None
        assert listed["items"] == []
    listed = kubectl.get_json("deployments", "-n", dry_namespace)
    assert listed is not None
    assert listed["items"] == []
