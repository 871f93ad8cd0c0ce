"""The webhook configurations and CRD conversion stanzas, built from settings alone.

These are the objects the Helm chart renders too, so their exact shape is pinned here: names,
paths, rules, namespace selectors, client configs in both modes; plus the comparisons the
registrar uses to decide whether to write, and the conversion the generated CRDs declare.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from pydantic import ValidationError

from klt_common.structs import api, crdgen
from klt_webhook import registration
from klt_webhook.settings import RegistrationSettings

BUNDLE = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
B64 = base64.b64encode(BUNDLE).decode()


def test_the_mutating_configuration_in_service_mode() -> None:
    config = registration.mutating_configuration(RegistrationSettings(), "klt-system", 9443, BUNDLE)
    assert config == {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {
            "name": "klt-mutating-webhook",
            "labels": {
                "app.kubernetes.io/part-of": "klt",
                "app.kubernetes.io/managed-by": "klt-webhook",
            },
        },
        "webhooks": [
            {
                "name": "mpod.klt.dev",
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": "Fail",
                "timeoutSeconds": 5,
                "matchPolicy": "Equivalent",
                "reinvocationPolicy": "Never",
                "namespaceSelector": {
                    "matchExpressions": [
                        {
                            "key": "kubernetes.io/metadata.name",
                            "operator": "NotIn",
                            "values": [
                                "klt-system",
                                "kube-node-lease",
                                "kube-public",
                                "kube-system",
                            ],
                        }
                    ]
                },
                "clientConfig": {
                    "service": {
                        "name": "klt-webhook",
                        "namespace": "klt-system",
                        "path": "/mutate-v1-pod",
                        "port": 443,
                    },
                    "caBundle": B64,
                },
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "resources": ["pods"],
                        "operations": ["CREATE", "UPDATE"],
                        "scope": "Namespaced",
                    }
                ],
            }
        ],
    }


def test_the_validating_configuration_uses_keptns_paths_in_url_mode() -> None:
    settings = RegistrationSettings(
        mode="url", url_host="127.0.0.1", failure_policy="Ignore", timeout_seconds=3
    )
    config = registration.validating_configuration(settings, "klt-system", 18443, BUNDLE)
    assert config["metadata"]["name"] == "klt-validating-webhook"
    hooks = {hook["name"]: hook for hook in config["webhooks"]}
    assert {name: hook["clientConfig"]["url"] for name, hook in hooks.items()} == {
        "vkeptntaskdefinition.klt.dev": (
            "https://127.0.0.1:18443/validate-lifecycle-keptn-sh-v1-keptntaskdefinition"
        ),
        "vkeptnmetric.klt.dev": "https://127.0.0.1:18443/validate-metrics-keptn-sh-v1-keptnmetric",
        "vanalysis.klt.dev": "https://127.0.0.1:18443/validate-metrics-keptn-sh-v1-analysis",
        "vanalysisdefinition.klt.dev": (
            "https://127.0.0.1:18443/validate-metrics-keptn-sh-v1-analysisdefinition"
        ),
    }
    for hook in hooks.values():
        assert hook["failurePolicy"] == "Ignore"
        assert hook["timeoutSeconds"] == 3
        assert hook["sideEffects"] == "None"
        assert hook["rules"][0]["operations"] == ["CREATE", "UPDATE"]
        assert hook["rules"][0]["apiVersions"] == ["v1"]
        assert "service" not in hook["clientConfig"]
        # Definitions in the klt namespace are the fallback for every namespace: validated too.
        (selector,) = hook["namespaceSelector"]["matchExpressions"]
        assert "klt-system" not in selector["values"]
    assert hooks["vanalysis.klt.dev"]["rules"][0]["resources"] == ["analyses"]


def test_an_explicit_url_port_and_ipv6_host() -> None:
    settings = RegistrationSettings(mode="url", url_host="::1", url_port=8443)
    config = registration.client_config(settings, "ns", 9443, "/convert", None)
    assert config == {"url": "https://[::1]:8443/convert"}


def test_allowed_namespaces_add_an_in_selector() -> None:
    settings = RegistrationSettings(allowed_namespaces=("team-b", "team-a"))
    selector = registration.namespace_selector(settings, "klt", exclude_own=True)
    assert selector["matchExpressions"][1] == {
        "key": "kubernetes.io/metadata.name",
        "operator": "In",
        "values": ["team-a", "team-b"],
    }


def test_denied_namespaces_join_the_not_in_selector() -> None:
    settings = RegistrationSettings(denied_namespaces=("monitoring",))
    (selector,) = registration.namespace_selector(settings, "klt", exclude_own=False)[
        "matchExpressions"
    ]
    assert selector["operator"] == "NotIn"
    assert selector["values"] == ["kube-node-lease", "kube-public", "kube-system", "monitoring"]


def test_allowed_and_denied_namespaces_are_exclusive() -> None:
    with pytest.raises(ValidationError, match=r"either registration\.allowed_namespaces"):
        RegistrationSettings(allowed_namespaces=("a",), denied_namespaces=("b",))


def test_pod_operations_can_be_narrowed_to_create() -> None:
    config = registration.mutating_configuration(
        RegistrationSettings(), "klt", 1, None, operations=("CREATE",)
    )
    assert config["webhooks"][0]["rules"][0]["operations"] == ["CREATE"]
    assert "caBundle" not in config["webhooks"][0]["clientConfig"]


# --- comparing ---------------------------------------------------------------------------------


def test_covers_ignores_server_defaults_but_not_differences() -> None:
    desired = {"a": 1, "b": [{"c": "x"}]}
    assert registration.covers({"a": 1, "b": [{"c": "x", "d": 2}], "e": 3}, desired)
    assert not registration.covers({"a": 1, "b": [{"c": "y"}]}, desired)
    assert not registration.covers({"a": 1, "b": []}, desired)
    assert not registration.covers({"a": True, "b": [{"c": "x"}]}, {"a": 1, "b": [{"c": "x"}]})


def _crd(conversion: dict[str, Any]) -> dict[str, Any]:
    return {"spec": {"conversion": conversion}}


def test_conversion_matches_only_without_a_leftover_service() -> None:
    settings = RegistrationSettings(mode="url")
    desired = registration.crd_conversion(settings, "klt-system", 18443, BUNDLE)
    assert registration.conversion_matches(_crd(desired), desired)
    both = {
        **desired,
        "webhook": {
            **desired["webhook"],
            "clientConfig": {**desired["webhook"]["clientConfig"], "service": {"name": "x"}},
        },
    }
    assert not registration.conversion_matches(_crd(both), desired)
    assert not registration.conversion_matches(_crd({"strategy": "None"}), desired)


def test_the_conversion_patch_removes_the_other_endpoint() -> None:
    desired = registration.crd_conversion(
        RegistrationSettings(mode="url"), "klt-system", 18443, BUNDLE
    )
    patch = registration.conversion_patch(desired)
    assert patch == {
        "spec": {
            "conversion": {
                "strategy": "Webhook",
                "webhook": {
                    "conversionReviewVersions": ["v1"],
                    "clientConfig": {
                        "url": "https://127.0.0.1:18443/convert",
                        "caBundle": B64,
                        "service": None,
                    },
                },
            }
        }
    }


# --- the generated CRDs ------------------------------------------------------------------------


@pytest.mark.parametrize("entry", api.resource_kinds(), ids=lambda e: e.kind)
def test_multi_version_crds_name_the_conversion_webhook(entry: api.ResourceKind) -> None:
    conversion = crdgen.crd_for(entry)["spec"]["conversion"]
    if len(crdgen.served_versions(entry)) == 1:
        assert conversion == {"strategy": "None"}
        return
    assert conversion == {
        "strategy": "Webhook",
        "webhook": {
            "conversionReviewVersions": ["v1"],
            "clientConfig": {
                "service": {
                    "name": "klt-webhook",
                    "namespace": "klt-system",
                    "path": "/convert",
                    "port": 443,
                }
            },
        },
    }
    # The webhook, in service mode with the chart's defaults, writes the same stanza (plus the
    # CA bundle), so it never fights the chart over the reference.
    written = registration.crd_conversion(RegistrationSettings(), "klt-system", 9443, None)
    assert written == conversion


def test_served_versions_list_the_storage_version_first() -> None:
    app = api.by_kind("KeptnApp")
    assert crdgen.served_versions(app) == ("v1", "v1alpha1", "v1alpha2", "v1alpha3", "v1beta1")
    assert crdgen.served_versions(api.by_kind("KeptnConfig")) == ("v1alpha1",)
