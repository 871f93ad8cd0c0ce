"""Fixtures for the webhook's integration tests.

Two kinds of webhook are used:

- ``webhook``: a webhook service run in this process with ``serve``, on free ports, with its
  own certificates (a Secret in the test's namespace) and its own ValidatingWebhookConfiguration
  named after the test's namespace and scoped to it. It leaves the CRDs alone and never touches
  pod admission, so it cannot disturb anything else on the shared apiserver; its configuration
  is deleted when the test ends, so no configuration is left pointing at a dead port.
- ``stack_webhook``: the dev stack's own webhook process, which owns the CRDs' conversion (there
  can only be one per cluster). The fixture starts it if it is not running.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from webhook_testkit import RunningWebhook, StartWebhook, wait_for

from klt_common.clients import cluster as k8s
from klt_common.configs.settings import (
    BusSettings,
    ClusterSettings,
    ObservabilitySettings,
    ShutdownSettings,
)
from klt_common.service import serve
from klt_webhook.app import setup
from klt_webhook.settings import (
    AdmissionSettings,
    CertSettings,
    RegistrationSettings,
    WebhookSettings,
)


@pytest.fixture
async def webhook(
    cluster: k8s.ClusterClient,
    cluster_settings: ClusterSettings,
    bus_settings: BusSettings,
    namespace: str,
) -> AsyncIterator[StartWebhook]:
    """Start an isolated webhook service; ``await webhook(certs=CertSettings(...))``.

    Several may be started in one test: they then share the Secret and the configuration, like
    replicas of one Deployment (give them one ``url_port``, as they would share a Service).
    """
    started: list[RunningWebhook] = []
    names = f"klt-test-{namespace}"

    async def start(**overrides: Any) -> RunningWebhook:
        certs = overrides.pop("certs", CertSettings())
        admission_port = overrides.pop("admission_port", 0)
        url_port = overrides.pop("url_port", None)
        settings = WebhookSettings(
            service_name="webhook-test",
            instance_id=f"webhook-test-{uuid.uuid4().hex[:6]}",
            bus=bus_settings,
            cluster=cluster_settings.model_copy(update={"namespace": namespace}),
            observability=ObservabilitySettings(http_host="127.0.0.1", http_port=0, log_json=False),
            shutdown=ShutdownSettings(grace_seconds=5),
            admission=AdmissionSettings(host="127.0.0.1", port=admission_port),
            certs=certs.model_copy(update={"extra_ip_addresses": ("127.0.0.1",)}),
            registration=RegistrationSettings(
                mode="url",
                url_host="127.0.0.1",
                url_port=url_port,
                mutating=False,
                manage_crd_conversion=False,
                allowed_namespaces=(namespace,),
                mutating_name=names,
                validating_name=names,
                resync_seconds=5,
            ),
            **overrides,
        )
        registry = CollectorRegistry()
        stop = asyncio.Event()
        task = asyncio.create_task(serve(settings, setup, stop=stop, registry=registry))
        running = RunningWebhook(settings, registry, stop, task)
        started.append(running)

        async def registered() -> bool:
            if task.done():
                task.result()
            config = await cluster.get_or_none(k8s.VALIDATING_WEBHOOKS, names)
            return config is not None and all(
                "caBundle" in hook["clientConfig"] for hook in config["webhooks"]
            )

        await wait_for(registered, what="the test webhook to register")
        return running

    try:
        yield start
    finally:
        for running in started:
            running.stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(running.task, 30)
        # Never leave a configuration that points at a port nobody listens on.
        await cluster.delete(k8s.VALIDATING_WEBHOOKS, names)
        await cluster.delete(k8s.MUTATING_WEBHOOKS, names)


@pytest.fixture
async def strict_cluster(cluster_settings: ClusterSettings) -> AsyncIterator[k8s.ClusterClient]:
    """A cluster client that never retries: a failed webhook call must fail the test, not be
    papered over by the client's retry of a 500."""
    settings = cluster_settings.model_copy(update={"retry_delays": ()})
    client = await k8s.ClusterClient.connect(settings)
    yield client
    await client.close()


@pytest.fixture(scope="session")
def stack_webhook(stack: Any) -> None:
    """The dev stack's webhook process, started if need be (it is a stack component)."""
    from klt_cli.devstack import stack as devstack

    spec = next(s for s in devstack.SERVICES if s.module == "klt_webhook")
    os.environ.setdefault("KLT_REPO_ROOT", str(Path(__file__).resolve().parents[3]))
    running = devstack.Stack(stack.state_dir, stack.cache_dir)
    devstack.start_services(running, services=[spec], timeout=120)
