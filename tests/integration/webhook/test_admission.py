"""The webhook registered with the real apiserver, called over TLS, rotating its certificates.

Each test runs its own webhook service in this process (see ``conftest.webhook``), registered
for its own namespace only. The stack's webhook validates the same objects too, so these tests
count the reviews their own webhook answered to prove it was the one called.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
from typing import Any

import pytest
from cryptography import x509
from webhook_testkit import TASK_DEFINITIONS, StartWebhook, definition

from klt_common.clients import cluster as k8s
from klt_webhook.settings import CertSettings

pytestmark = pytest.mark.usefixtures("stack_webhook")

METRICS = k8s.keptn_resource("KeptnMetric")
ANALYSES = k8s.keptn_resource("Analysis")
ANALYSIS_DEFINITIONS = k8s.keptn_resource("AnalysisDefinition")


async def _rejection(
    cluster: k8s.ClusterClient, resource: k8s.Resource, body: dict[str, Any], namespace: str
) -> str:
    with pytest.raises(k8s.ApiError) as caught:
        await cluster.create(resource, body, namespace)
    return caught.value.message


async def test_an_invalid_task_definition_is_rejected_and_a_valid_one_accepted(
    webhook: StartWebhook, cluster: k8s.ClusterClient, namespace: str
) -> None:
    running = await webhook()
    message = await _rejection(cluster, TASK_DEFINITIONS, definition("empty", {}), namespace)
    assert 'admission webhook "vkeptntaskdefinition.klt.dev" denied the request' in message
    assert "Forbidden! Either Container, Python, or Deno field must be defined" in message
    message = await _rejection(
        cluster,
        TASK_DEFINITIONS,
        definition("both", {"deno": {"inline": {"code": "1"}}, "python": {}}),
        namespace,
    )
    assert "Only one of Container, Python, or Deno field can be defined" in message
    assert "found spec.python, spec.deno" in message

    created = await cluster.create(
        TASK_DEFINITIONS, definition("fine", {"deno": {"inline": {"code": "1"}}}), namespace
    )
    assert created["metadata"]["name"] == "fine"
    assert running.reviews("KeptnTaskDefinition", "denied") >= 2
    assert running.reviews("KeptnTaskDefinition", "allowed") >= 1


async def test_metrics_kinds_are_validated(
    webhook: StartWebhook, cluster: k8s.ClusterClient, namespace: str
) -> None:
    running = await webhook()
    metric = {
        "apiVersion": METRICS.api_version,
        "kind": "KeptnMetric",
        "metadata": {"name": "m"},
        "spec": {
            "provider": {"name": "prometheus"},
            "query": "up",
            "fetchIntervalSeconds": 10,
            "range": {"interval": "5m", "step": "1m"},
        },
    }
    message = await _rejection(cluster, METRICS, metric, namespace)
    assert "Forbidden! Aggregation field is required if defining the step field" in message
    analysis = {
        "apiVersion": ANALYSES.api_version,
        "kind": "Analysis",
        "metadata": {"name": "a"},
        "spec": {
            "analysisDefinition": {"name": "d"},
            "timeframe": {"from": "2026-01-01T10:00:00Z", "to": "2026-01-01T09:00:00Z"},
        },
    }
    message = await _rejection(cluster, ANALYSES, analysis, namespace)
    assert "value of 'to' must be a timestamp later than 'from'" in message
    analysis_definition = {
        "apiVersion": ANALYSIS_DEFINITIONS.api_version,
        "kind": "AnalysisDefinition",
        "metadata": {"name": "d"},
        "spec": {
            "objectives": [
                {
                    "analysisValueTemplateRef": {"name": "t"},
                    "target": {"failure": {"inRange": {"lowBound": 5, "highBound": 1}}},
                }
            ],
            "totalScore": {"passPercentage": 60, "warningPercentage": 80},
        },
    }
    message = await _rejection(cluster, ANALYSIS_DEFINITIONS, analysis_definition, namespace)
    assert "RangeValue: lower bound of the range needs to be smaller than higher bound" in message
    assert "warn percentage score cannot be higher or equal than Pass percentage" in message
    for endpoint in ("KeptnMetric", "Analysis", "AnalysisDefinition"):
        assert running.reviews(endpoint, "denied") >= 1, endpoint


async def test_the_registered_configuration_is_the_settings_own(
    webhook: StartWebhook, cluster: k8s.ClusterClient, namespace: str
) -> None:
    running = await webhook()
    registration = running.settings.registration
    config = await cluster.get(k8s.VALIDATING_WEBHOOKS, registration.validating_name)
    hooks = {hook["name"]: hook for hook in config["webhooks"]}
    assert set(hooks) == {
        "vkeptntaskdefinition.klt.dev",
        "vkeptnmetric.klt.dev",
        "vanalysis.klt.dev",
        "vanalysisdefinition.klt.dev",
    }
    for hook in hooks.values():
        assert hook["failurePolicy"] == "Fail"
        assert hook["timeoutSeconds"] == 5
        assert hook["sideEffects"] == "None"
        assert hook["admissionReviewVersions"] == ["v1"]
        assert hook["clientConfig"]["url"].startswith("https://127.0.0.1:")
        assert {"key": "kubernetes.io/metadata.name", "operator": "In", "values": [namespace]} in (
            hook["namespaceSelector"]["matchExpressions"]
        )
    # The CA bundle verifies the certificate the server presents.
    bundle = base64.b64decode(hooks["vanalysis.klt.dev"]["clientConfig"]["caBundle"])
    port = int(hooks["vanalysis.klt.dev"]["clientConfig"]["url"].split(":")[2].split("/")[0])
    assert await _served_serial(port, bundle) > 0
    assert await cluster.get_or_none(k8s.MUTATING_WEBHOOKS, registration.mutating_name) is None


async def _served_serial(port: int, bundle: bytes) -> int:
    context = ssl.create_default_context(cadata=bundle.decode())
    _, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="127.0.0.1"
    )
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    await writer.wait_closed()
    return x509.load_der_x509_certificate(der).serial_number


@pytest.mark.slow
async def test_certificates_rotate_without_restart_and_the_apiserver_keeps_calling(
    webhook: StartWebhook, strict_cluster: k8s.ClusterClient, namespace: str
) -> None:
    cluster = strict_cluster
    # Short lives: the serving certificate is renewed every ~3 s, the CA every ~9 s.
    running = await webhook(
        certs=CertSettings(
            cert_validity_seconds=6,
            ca_validity_seconds=12,
            renew_before_seconds=3,
            check_interval_seconds=0.5,
            propagation_seconds=1.0,
        ),
    )
    name = running.settings.registration.validating_name

    async def current() -> tuple[int, bytes]:
        config = await cluster.get(k8s.VALIDATING_WEBHOOKS, name)
        client = config["webhooks"][0]["clientConfig"]
        bundle = base64.b64decode(client["caBundle"])
        port = int(client["url"].split(":")[2].split("/")[0])
        return await _served_serial(port, bundle), bundle

    serials: set[int] = set()
    bundles: set[bytes] = set()
    calls = 0
    deadline = asyncio.get_running_loop().time() + 25
    while asyncio.get_running_loop().time() < deadline and (len(serials) < 3 or len(bundles) < 2):
        serial, bundle = await current()
        serials.add(serial)
        bundles.add(bundle)
        calls += 1
        # Every call must reach our webhook over TLS: a failed handshake would surface as
        # "failed calling webhook", not as our message.
        message = await _rejection(
            cluster, TASK_DEFINITIONS, definition(f"bad-{calls}", {}), namespace
        )
        assert "Forbidden! Either Container, Python, or Deno field must be defined" in message
        await cluster.create(
            TASK_DEFINITIONS, definition(f"good-{calls}", {"container": {"name": "c"}}), namespace
        )
        await asyncio.sleep(0.3)
    assert len(serials) >= 3, f"the serving certificate did not rotate: {serials}"
    assert len(bundles) >= 2, "the CA bundle was never replaced"
    assert running.reviews("KeptnTaskDefinition", "denied") >= calls
    assert not running.task.done(), "the service restarted or crashed"
    secret = await cluster.get(k8s.SECRETS, running.settings.certs.secret_name, namespace)
    assert set(secret["data"]) >= {"ca.crt", "ca.key", "tls.crt", "tls.key"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.mark.slow
async def test_a_lagging_replica_never_reverts_a_renewed_ca_bundle(
    webhook: StartWebhook, strict_cluster: k8s.ClusterClient, namespace: str
) -> None:
    cluster = strict_cluster
    # Two replicas share the Secret and the configuration; the apiserver calls the first. The
    # second checks its certificates rarely, so it still holds the old CA when the first
    # renews it, and is woken by the first one's configuration write.
    port = _free_port()
    lives = {
        "cert_validity_seconds": 6,
        "ca_validity_seconds": 12,
        "renew_before_seconds": 3,
        "propagation_seconds": 1.0,
    }
    first = await webhook(
        certs=CertSettings(check_interval_seconds=0.5, **lives),
        admission_port=port,
        url_port=port,
    )
    await webhook(certs=CertSettings(check_interval_seconds=20, **lives), url_port=port)
    name = first.settings.registration.validating_name
    bundles: list[str] = []
    calls = 0
    deadline = asyncio.get_running_loop().time() + 20
    while asyncio.get_running_loop().time() < deadline and len(bundles) < 3:
        config = await cluster.get(k8s.VALIDATING_WEBHOOKS, name)
        bundle = config["webhooks"][0]["clientConfig"]["caBundle"]
        if not bundles or bundles[-1] != bundle:
            assert bundle not in bundles, "a replaced CA bundle was written back"
            bundles.append(bundle)
        calls += 1
        message = await _rejection(
            cluster, TASK_DEFINITIONS, definition(f"bad-{calls}", {}), namespace
        )
        assert "Forbidden! Either Container, Python, or Deno field must be defined" in message
        await asyncio.sleep(0.3)
    assert len(bundles) >= 3, "the CA was not renewed (or its old copy never left the bundle)"
