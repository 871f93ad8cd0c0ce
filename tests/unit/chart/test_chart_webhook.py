"""The chart's webhook configurations, certificates and CRDs agree with the webhook service.

The webhook keeps its registration current itself (self-managed certificates) and the chart
renders the same objects so that uninstalling removes them and RBAC can name them. If the two
disagreed, they would rewrite each other's fields forever. So the chart's objects are compared
with what ``klt_webhook.registration`` builds from the settings the chart gives the webhook
(its Deployment's environment):

- the Mutating- and ValidatingWebhookConfiguration, field for field: failurePolicy,
  timeoutSeconds, namespace selectors (allowed and denied namespaces), rules, Service;
- the conversion webhook of every multi-version CRD;
- the serving certificate's names (cert-manager) or the Secret the webhook writes (self-managed).

The CRDs are the generated files of deploy/crds, read through a link, with nothing changed but
metadata and the conversion webhook's Service.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_kit import CHART, CRD_DIR, Rendered, crds_from_files, multi_version_crds, render

from klt_webhook import certs, registration
from klt_webhook.settings import WebhookSettings

Renders = Callable[[str], Rendered]

WEBHOOK_SETS = (
    "defaults",
    "allowed-namespaces",
    "denied-namespaces",
    "failure-policy-ignore",
    "cert-manager",
)


def _webhook_settings(rendered: Rendered, monkeypatch: pytest.MonkeyPatch) -> WebhookSettings:
    for name in list(os.environ):
        if name.startswith("KLT_"):
            monkeypatch.delenv(name)
    for name, value in rendered.env("webhook").items():
        monkeypatch.setenv(name, value)
    return WebhookSettings()


@pytest.mark.parametrize("value_set", WEBHOOK_SETS)
def test_webhook_configurations_are_what_the_webhook_registers(
    rendered_sets: Renders, value_set: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rendered = rendered_sets(value_set)
    settings = _webhook_settings(rendered, monkeypatch)
    reg, namespace, port = (
        settings.registration,
        settings.cluster.namespace,
        settings.admission.port,
    )
    desired = [
        registration.mutating_configuration(
            reg, namespace, port, None, operations=reg.pod_operations
        ),
        registration.validating_configuration(reg, namespace, port, None),
    ]
    for want in desired:
        got = rendered.get(want["kind"], want["metadata"]["name"])
        assert got["webhooks"] == want["webhooks"]
        assert want["metadata"]["labels"].items() <= got["metadata"]["labels"].items(), (
            "the labels the webhook applies must already be there, or each side rewrites them"
        )
        assert "caBundle" not in yaml.safe_dump(got), "the chart must never clear the CA bundle"
    service = rendered.get("Service", reg.service_name)
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert ports["https"]["port"] == reg.service_port
    container = rendered.deployment("webhook")["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "https", "containerPort": port, "protocol": "TCP"} in container["ports"]


def test_failure_policy_defaults_to_fail_and_can_be_ignore(rendered_sets: Renders) -> None:
    def policies(rendered: Rendered) -> set[tuple[str, int]]:
        configs = rendered.of_kind("MutatingWebhookConfiguration") + rendered.of_kind(
            "ValidatingWebhookConfiguration"
        )
        return {(w["failurePolicy"], w["timeoutSeconds"]) for c in configs for w in c["webhooks"]}

    assert policies(rendered_sets("defaults")) == {("Fail", 5)}
    assert policies(rendered_sets("failure-policy-ignore")) == {("Ignore", 3)}


def _selector(rendered: Rendered, kind: str) -> list[dict[str, Any]]:
    (config,) = rendered.of_kind(kind)
    expressions: list[dict[str, Any]] = config["webhooks"][0]["namespaceSelector"][
        "matchExpressions"
    ]
    return expressions


def test_namespace_selectors_follow_allowed_and_denied_namespaces(rendered_sets: Renders) -> None:
    system = ["kube-node-lease", "kube-public", "kube-system"]
    pods = _selector(rendered_sets("defaults"), "MutatingWebhookConfiguration")
    assert pods == [
        {
            "key": "kubernetes.io/metadata.name",
            "operator": "NotIn",
            "values": sorted(
                [*system, "klt-system", "cert-manager", "observability", "monitoring"]
            ),
        }
    ], "the release namespace never gets pod admission: the webhook must not gate itself"
    denied = _selector(rendered_sets("denied-namespaces"), "ValidatingWebhookConfiguration")
    assert denied[0]["values"] == sorted([*system, "legacy", "sandbox"])
    allowed = _selector(rendered_sets("allowed-namespaces"), "MutatingWebhookConfiguration")
    assert allowed == [
        {
            "key": "kubernetes.io/metadata.name",
            "operator": "NotIn",
            "values": sorted([*system, "klt-system"]),
        },
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["team-a", "team-b"]},
    ], "allowedNamespaces replaces the default deniedNamespaces"


def test_self_managed_certificates_live_in_one_named_secret(rendered_sets: Renders) -> None:
    rendered = rendered_sets("defaults")
    secret = rendered.get("Secret", "klt-certs")
    assert "data" not in secret, "an upgrade must not overwrite what the webhook wrote"
    env = rendered.env("webhook")
    assert env["KLT_CERTS__MODE"] == "self-managed"
    assert env["KLT_CERTS__SECRET_NAME"] == "klt-certs"
    assert env["KLT_REGISTRATION__ENABLED"] == "true"
    assert not [d for d in rendered.docs if d["apiVersion"].startswith("cert-manager.io")]


@pytest.mark.parametrize("value_set", ["cert-manager", "cert-manager-issuer"])
def test_cert_manager_issues_the_certificate_and_injects_the_ca(
    rendered_sets: Renders, value_set: str
) -> None:
    rendered = rendered_sets(value_set)
    certificate = rendered.get("Certificate", "klt-webhook")
    service = "klt-webhook"
    names = certs.serving_names(service, "klt-system")
    assert set(certificate["spec"]["dnsNames"]) >= set(names.dns), (
        "the certificate must carry the names the apiserver dials"
    )
    injected = "klt-system/klt-webhook"
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        (config,) = rendered.of_kind(kind)
        assert config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == injected
    for crd in rendered.of_kind("CustomResourceDefinition"):
        if crd["spec"].get("conversion", {}).get("strategy") == "Webhook":
            annotations = crd["metadata"]["annotations"]
            assert annotations["cert-manager.io/inject-ca-from"] == injected
    env = rendered.env("webhook")
    assert env["KLT_CERTS__MODE"] == "files"
    assert env["KLT_REGISTRATION__ENABLED"] == "false", "the CA injector owns the caBundle"
    assert env["KLT_REGISTRATION__MANAGE_CRD_CONVERSION"] == "false"
    pod = rendered.deployment("webhook")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == certificate["spec"]["secretName"]
    mounts = pod["containers"][0]["volumeMounts"]
    assert {m["mountPath"] for m in mounts if m["name"] == volume["name"]} == {
        env["KLT_CERTS__CERT_DIR"]
    }
    assert not rendered.of_kind("Secret"), "cert-manager writes the Secret"
    issuer = certificate["spec"]["issuerRef"]
    if value_set == "cert-manager-issuer":
        assert issuer == {"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
        assert not rendered.of_kind("Issuer")
    else:
        assert rendered.get("Issuer", issuer["name"])["spec"]["ca"]["secretName"] == "klt-ca"
        assert rendered.get("Certificate", "klt-ca")["spec"]["isCA"] is True


# --- CRDs ---------------------------------------------------------------------------------------


def test_the_crds_chart_reads_deploy_crds_through_a_link() -> None:
    for link in (CHART / "charts" / "crds" / "files", CHART / "charts" / "webhook" / "files"):
        assert link.is_symlink(), f"{link} must link to deploy/crds, not copy it"
        assert link.resolve() == CRD_DIR.resolve()


@pytest.mark.parametrize("value_set", ["defaults", "cert-manager"])
def test_rendered_crds_are_the_generated_files(rendered_sets: Renders, value_set: str) -> None:
    rendered = rendered_sets(value_set)
    files = crds_from_files()
    crds = {d["metadata"]["name"]: d for d in rendered.of_kind("CustomResourceDefinition")}
    assert set(crds) == set(files)
    for name, generated in files.items():
        got = copy.deepcopy(crds[name])
        want = copy.deepcopy(generated)
        assert want["metadata"]["labels"].items() <= got["metadata"]["labels"].items()
        assert got["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        for doc in (got, want):
            doc["metadata"].pop("labels", None)
            doc["metadata"].pop("annotations", None)
            conversion = doc["spec"].get("conversion", {})
            if conversion.get("strategy") == "Webhook":
                conversion["webhook"]["clientConfig"].pop("service")
        assert got == want, f"{name}: the chart changed more than metadata and the Service"


def test_crd_conversion_is_what_the_webhook_registers(
    helm_bin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rendered = render(helm_bin, {}, release="lifecycle", namespace="platform")
    settings = _webhook_settings(rendered, monkeypatch)
    want = registration.crd_conversion(
        settings.registration, settings.cluster.namespace, settings.admission.port, None
    )
    assert want["webhook"]["clientConfig"]["service"]["namespace"] == "platform"
    multi = set(multi_version_crds())
    assert multi, "deploy/crds has multi-version CRDs"
    for crd in rendered.of_kind("CustomResourceDefinition"):
        if crd["metadata"]["name"] in multi:
            assert crd["spec"]["conversion"] == want


def test_crds_can_be_left_to_someone_else(helm_bin: Path) -> None:
    rendered = render(helm_bin, {"crds": {"enabled": False}})
    assert not rendered.of_kind("CustomResourceDefinition")
    assert rendered.of_kind("MutatingWebhookConfiguration")
