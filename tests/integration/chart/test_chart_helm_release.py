"""`helm install`, `helm upgrade` and `helm uninstall` of the chart against the dev stack.

test_chart_install.py applies the rendered objects with kubectl; this test goes through helm
itself, which adds its own checks (ownership of existing objects, install order, hooks-free
upgrade of the same objects) and, above all, proves that `helm uninstall` leaves nothing behind:
a pod webhook configuration surviving its Service would keep calling a dead endpoint.

Same precautions as test_chart_install.py: a dedicated namespace and release name, the webhook
with failurePolicy Ignore and limited to the release namespace, and ``crds.enabled: false``: the
stack owns the CRDs already (helm refuses to adopt objects it did not create, and uninstalling
them would delete every test's custom resources).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from chart_kit import CHART, helm
from kube_kit import Kubectl

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

CLUSTER_KINDS = (
    "clusterroles",
    "clusterrolebindings",
    "mutatingwebhookconfigurations",
    "validatingwebhookconfigurations",
)


@pytest.fixture
def release(kubectl_bin: Path, kubeconfig: str) -> Iterator[tuple[str, Kubectl]]:
    kubectl = Kubectl(kubectl_bin, kubeconfig)
    name = f"klt-hr-{uuid.uuid4().hex[:8]}"
    kubectl.run("create", "namespace", name)
    try:
        yield name, kubectl
    finally:
        # Whatever the test left: by label, for this release only.
        kubectl.run(
            "delete",
            ",".join(CLUSTER_KINDS),
            "-l",
            f"app.kubernetes.io/instance={name}",
            "--ignore-not-found",
            check=False,
        )
        kubectl.run("delete", "namespace", name, "--ignore-not-found", "--wait=false")


def _left_over(kubectl: Kubectl, release: str) -> list[str]:
    out = kubectl.run(
        "get", ",".join(CLUSTER_KINDS), "-l", f"app.kubernetes.io/instance={release}", "-o", "name"
    ).stdout.split()
    namespaced = kubectl.run(
        "get",
        "deployments,services,serviceaccounts,roles,rolebindings,secrets,poddisruptionbudgets",
        "-n",
        release,
        "-l",
        f"app.kubernetes.io/instance={release}",
        "-o",
        "name",
    ).stdout.split()
    return out + namespaced


def test_install_upgrade_and_uninstall_leave_nothing_behind(
    helm_bin: Path, kubeconfig: str, release: tuple[str, Kubectl]
) -> None:
    name, kubectl = release
    common = ["--namespace", name, "--kubeconfig", kubeconfig]
    values = [
        "--set",
        "crds.enabled=false",
        "--set",
        "webhook.failurePolicy=Ignore",
        "--set",
        f"webhook.allowedNamespaces={{{name}}}",
    ]
    helm(helm_bin, "install", name, str(CHART), *common, *values, timeout=300)
    status = helm(helm_bin, "status", name, *common)
    assert "STATUS: deployed" in status
    assert (
        f"{name}-mutating-webhook"
        in kubectl.run("get", "mutatingwebhookconfigurations", "-o", "name").stdout
    )

    helm(
        helm_bin,
        "upgrade",
        name,
        str(CHART),
        *common,
        *values,
        "--set",
        "scheduler.replicas=2",
        "--set",
        "webhook.timeoutSeconds=3",
        timeout=300,
    )
    scheduler = kubectl.get_json("deployment", f"{name}-scheduler", "-n", name)
    assert scheduler is not None
    assert scheduler["spec"]["replicas"] == 2
    webhook = kubectl.get_json("mutatingwebhookconfiguration", f"{name}-mutating-webhook")
    assert webhook is not None
    assert webhook["webhooks"][0]["timeoutSeconds"] == 3

    assert _left_over(kubectl, name)
    helm(helm_bin, "uninstall", name, *common, "--wait", timeout=300)
    assert _left_over(kubectl, name) == []
