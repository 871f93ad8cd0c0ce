"""The objects that register the webhook with the apiserver. Pure; no I/O.

The running service writes them (:mod:`klt_webhook.registrar`) and the Helm chart renders the
same ones, so they are built here by plain functions of the settings, the klt namespace, the
admission port and the CA bundle:

- :func:`mutating_configuration`: ``klt-mutating-webhook``, pods on CREATE/UPDATE
  (``mpod.klt.dev``, Keptn's ``mpod.keptn.sh``);
- :func:`validating_configuration`: ``klt-validating-webhook``, one webhook per validated kind
  (Keptn's paths, so a reader of Keptn's docs finds them);
- :func:`crd_conversion`: the ``spec.conversion`` of every multi-version klt CRD.

Every webhook uses ``admissionReviewVersions: [v1]``, ``sideEffects: None``, the configured
``failurePolicy`` and ``timeoutSeconds``, and a namespace selector on
``kubernetes.io/metadata.name`` that keeps the system namespaces out.
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from klt_webhook.settings import RegistrationSettings

__all__ = [
    "CONVERT_PATH",
    "MUTATE_POD_PATH",
    "SYSTEM_NAMESPACES",
    "VALIDATED",
    "ValidatedKind",
    "client_config",
    "conversion_matches",
    "conversion_patch",
    "covers",
    "crd_conversion",
    "mutating_configuration",
    "namespace_selector",
    "validating_configuration",
]

MUTATE_POD_PATH = "/mutate-v1-pod"
CONVERT_PATH = "/convert"
SYSTEM_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease")
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
_LABELS = {"app.kubernetes.io/part-of": "klt", "app.kubernetes.io/managed-by": "klt-webhook"}


@dataclass(frozen=True, slots=True)
class ValidatedKind:
    """A Keptn kind with a validating webhook."""

    kind: str
    group: str
    plural: str
    webhook: str
    """The webhook's name in the configuration."""

    @property
    def path(self) -> str:
        """Keptn's path: ``/validate-<group with dashes>-v1-<kind lower-cased>``."""
        return f"/validate-{self.group.replace('.', '-')}-v1-{self.kind.lower()}"


VALIDATED: tuple[ValidatedKind, ...] = (
    ValidatedKind(
        "KeptnTaskDefinition", "lifecycle.keptn.sh", "keptntaskdefinitions", "vkeptntaskdefinition"
    ),
    ValidatedKind("KeptnMetric", "metrics.keptn.sh", "keptnmetrics", "vkeptnmetric"),
    ValidatedKind("Analysis", "metrics.keptn.sh", "analyses", "vanalysis"),
    ValidatedKind(
        "AnalysisDefinition", "metrics.keptn.sh", "analysisdefinitions", "vanalysisdefinition"
    ),
)
_DOMAIN = "klt.dev"


def _bundle(ca_bundle: bytes | None) -> dict[str, str]:
    return {"caBundle": base64.b64encode(ca_bundle).decode("ascii")} if ca_bundle else {}


def _url_host(host: str) -> str:
    try:
        return f"[{host}]" if ipaddress.ip_address(host).version == 6 else host
    except ValueError:
        return host


def client_config(
    settings: RegistrationSettings,
    namespace: str,
    port: int,
    path: str,
    ca_bundle: bytes | None,
) -> dict[str, Any]:
    """How the apiserver reaches ``path``: a Service reference or a URL, plus the CA bundle."""
    config: dict[str, Any]
    if settings.mode == "url":
        url_port = settings.url_port or port
        config = {"url": f"https://{_url_host(settings.url_host)}:{url_port}{path}"}
    else:
        config = {
            "service": {
                "name": settings.service_name,
                "namespace": namespace,
                "path": path,
                "port": settings.service_port,
            }
        }
    config.update(_bundle(ca_bundle))
    return config


def namespace_selector(
    settings: RegistrationSettings, namespace: str, *, exclude_own: bool
) -> dict[str, Any]:
    """System namespaces (and, for pods, klt's own) out; then the allow or deny list."""
    excluded = list(SYSTEM_NAMESPACES)
    if exclude_own:
        excluded.append(namespace)
    excluded.extend(settings.denied_namespaces)
    expressions: list[dict[str, Any]] = [
        {
            "key": NAMESPACE_NAME_LABEL,
            "operator": "NotIn",
            "values": sorted(set(excluded)),
        }
    ]
    if settings.allowed_namespaces:
        expressions.append(
            {
                "key": NAMESPACE_NAME_LABEL,
                "operator": "In",
                "values": sorted(set(settings.allowed_namespaces)),
            }
        )
    return {"matchExpressions": expressions}


def _webhook(
    settings: RegistrationSettings,
    *,
    name: str,
    config: dict[str, Any],
    rule: dict[str, Any],
    selector: dict[str, Any],
) -> dict[str, Any]:
    return {
        "name": name,
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "failurePolicy": settings.failure_policy,
        "timeoutSeconds": settings.timeout_seconds,
        # Equivalent: a request at an older API version is converted to v1 and still checked.
        "matchPolicy": "Equivalent",
        "namespaceSelector": selector,
        "clientConfig": config,
        "rules": [rule],
    }


def mutating_configuration(
    settings: RegistrationSettings,
    namespace: str,
    port: int,
    ca_bundle: bytes | None,
    *,
    operations: tuple[str, ...] = ("CREATE", "UPDATE"),
) -> dict[str, Any]:
    """The MutatingWebhookConfiguration for pods."""
    webhook = _webhook(
        settings,
        name=f"mpod.{_DOMAIN}",
        config=client_config(settings, namespace, port, MUTATE_POD_PATH, ca_bundle),
        rule={
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "resources": ["pods"],
            "operations": list(operations),
            "scope": "Namespaced",
        },
        selector=namespace_selector(settings, namespace, exclude_own=True),
    )
    webhook["reinvocationPolicy"] = "Never"
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": settings.mutating_name, "labels": dict(_LABELS)},
        "webhooks": [webhook],
    }


def validating_configuration(
    settings: RegistrationSettings, namespace: str, port: int, ca_bundle: bytes | None
) -> dict[str, Any]:
    """The ValidatingWebhookConfiguration for the validated Keptn kinds.

    The klt namespace is validated too: definitions placed there are the cluster-wide fallback.
    """
    selector = namespace_selector(settings, namespace, exclude_own=False)
    webhooks = [
        _webhook(
            settings,
            name=f"{entry.webhook}.{_DOMAIN}",
            config=client_config(settings, namespace, port, entry.path, ca_bundle),
            rule={
                "apiGroups": [entry.group],
                "apiVersions": ["v1"],
                "resources": [entry.plural],
                "operations": ["CREATE", "UPDATE"],
                "scope": "Namespaced",
            },
            selector=selector,
        )
        for entry in VALIDATED
    ]
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": settings.validating_name, "labels": dict(_LABELS)},
        "webhooks": webhooks,
    }


def crd_conversion(
    settings: RegistrationSettings, namespace: str, port: int, ca_bundle: bytes | None
) -> dict[str, Any]:
    """A multi-version CRD's ``spec.conversion``, pointing at this webhook's ``/convert``."""
    return {
        "strategy": "Webhook",
        "webhook": {
            "conversionReviewVersions": ["v1"],
            "clientConfig": client_config(settings, namespace, port, CONVERT_PATH, ca_bundle),
        },
    }


# --- comparing with what is there --------------------------------------------------------------


def covers(current: Any, desired: Any) -> bool:
    """Whether ``current`` already holds everything ``desired`` says (the apiserver adds
    defaults, which are not differences); lists must match item by item."""
    if isinstance(desired, Mapping):
        if not isinstance(current, Mapping):
            return False
        return all(key in current and covers(current[key], value) for key, value in desired.items())
    if isinstance(desired, list):
        if not isinstance(current, list) or len(current) != len(desired):
            return False
        return all(covers(c, d) for c, d in zip(current, desired, strict=True))
    return bool(current == desired and type(current) is type(desired))


def conversion_matches(crd: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """Whether the CRD's conversion is ``desired``, with no stale url/service left beside it."""
    spec = crd.get("spec")
    current = spec.get("conversion") if isinstance(spec, Mapping) else None
    if not isinstance(current, Mapping) or not covers(current, desired):
        return False
    config = current.get("webhook", {}).get("clientConfig", {})
    wanted = desired["webhook"]["clientConfig"]
    return all((key in config) == (key in wanted) for key in ("url", "service", "caBundle"))


def conversion_patch(desired: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch that sets ``desired`` and removes whichever of url/service it lacks.

    A merge patch rather than a server-side apply: the chart's (or the dev stack's) apply owns
    ``clientConfig``, and only an update can take the other of the two exclusive fields away.
    """
    config = dict(desired["webhook"]["clientConfig"])
    for key in ("url", "service"):
        config.setdefault(key, None)
    return {
        "spec": {
            "conversion": {
                "strategy": desired["strategy"],
                "webhook": {**desired["webhook"], "clientConfig": config},
            }
        }
    }
