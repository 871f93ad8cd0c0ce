"""Helpers shared by the webhook's integration tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from klt_common.clients import cluster as k8s
from klt_webhook.settings import WebhookSettings

TASK_DEFINITIONS = k8s.keptn_resource("KeptnTaskDefinition")


def definition(name: str, spec: dict[str, Any], version: str = "v1") -> dict[str, Any]:
    """A KeptnTaskDefinition manifest."""
    return {
        "apiVersion": f"lifecycle.keptn.sh/{version}",
        "kind": "KeptnTaskDefinition",
        "metadata": {"name": name},
        "spec": spec,
    }


def at_version(resource: k8s.Resource, version: str) -> k8s.Resource:
    """The same resource, addressed at another served version."""
    return k8s.Resource(resource.group, version, resource.plural, resource.kind)


@dataclass
class RunningWebhook:
    """A webhook service running in this process."""

    settings: WebhookSettings
    registry: CollectorRegistry
    stop: asyncio.Event
    task: asyncio.Task[None]

    def reviews(self, endpoint: str, outcome: str) -> float:
        value = self.registry.get_sample_value(
            "klt_webhook_reviews_total", {"endpoint": endpoint, "outcome": outcome}
        )
        return value or 0.0


StartWebhook = Callable[..., Awaitable[RunningWebhook]]


async def wait_for(
    check: Callable[[], Awaitable[Any]], *, timeout: float = 30.0, what: str = "condition"
) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    last: Any = None
    while True:
        try:
            last = await check()
        except Exception as exc:  # noqa: BLE001 - keep polling; report the last failure
            last = exc
        else:
            if last:
                return last
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        await asyncio.sleep(0.2)
