"""Shared fixtures: the local stack, and per-test isolation on top of it.

Unit tests need none of this. Integration tests (everything under tests/integration, marked
automatically) get the real stack through the session-scoped ``stack`` fixture, which reuses a
running healthy stack or starts one. Each test then isolates itself: its own namespace
(``namespace``), its own topic prefix and consumer groups (``topic_prefix``, ``bus_settings``),
so tests pass in any order and can share one broker and one apiserver.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from klt_common.clients import cluster as k8s
from klt_common.clients import inspect
from klt_common.configs.settings import BusSettings, ClusterSettings

REPO_ROOT = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    integration = REPO_ROOT / "tests" / "integration"
    for item in items:
        if Path(str(item.fspath)).is_relative_to(integration):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def stack() -> object:
    """The running local stack (``klt_cli.devstack.stack.StackInfo``)."""
    from klt_cli.devstack import stack as devstack

    os.environ.setdefault("KLT_REPO_ROOT", str(REPO_ROOT))
    info = devstack.ensure_up(services=False)
    os.environ.update(info.env())
    return info


@pytest.fixture(scope="session")
def kubeconfig(stack: object) -> str:
    return str(stack.kubeconfig)  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def kafka_bootstrap(stack: object) -> str:
    return str(stack.kafka_bootstrap)  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def cluster_settings(kubeconfig: str) -> ClusterSettings:
    return ClusterSettings(kubeconfig=kubeconfig, retry_delays=(0.1, 0.5, 1.0))


@pytest.fixture(scope="session")
async def cluster(cluster_settings: ClusterSettings) -> AsyncIterator[k8s.ClusterClient]:
    client = await k8s.ClusterClient.connect(cluster_settings)
    yield client
    await client.close()


NamespaceFactory = Callable[..., Awaitable[str]]


@pytest.fixture
async def namespace_factory(cluster: k8s.ClusterClient) -> AsyncIterator[NamespaceFactory]:
    """Creates fresh namespaces (optionally labelled, e.g. with a shard label that keeps the
    stack's own services away), all deleted with everything in them after the test."""
    created: list[str] = []

    async def make(labels: dict[str, str] | None = None, *, name: str | None = None) -> str:
        name = name or f"t-{uuid.uuid4().hex[:10]}"
        await cluster.create(
            k8s.NAMESPACES,
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": name, "labels": dict(labels or {})},
            },
        )
        created.append(name)
        return name

    yield make
    for name in created:
        await cluster.delete(k8s.NAMESPACES, name)


@pytest.fixture
async def namespace(namespace_factory: NamespaceFactory) -> str:
    """A fresh namespace for one test, deleted afterwards (with everything in it)."""
    return await namespace_factory()


@pytest.fixture
def topic_prefix() -> str:
    """A topic prefix no other test uses."""
    return f"t{uuid.uuid4().hex[:10]}."


@pytest.fixture
async def bus_settings(kafka_bootstrap: str, topic_prefix: str) -> AsyncIterator[BusSettings]:
    """Bus settings isolated to this test, with short timeouts and retries; the test's topics
    are deleted afterwards so the shared broker does not accumulate thousands of them."""
    settings = BusSettings(
        bootstrap_servers=kafka_bootstrap,
        topic_prefix=topic_prefix,
        partitions=3,
        handler_retry_delays=(0.05, 0.1),
        session_timeout_ms=6_000,
        heartbeat_interval_ms=500,
    )
    yield settings
    with contextlib.suppress(Exception):
        await inspect.delete_prefixed_topics(settings)
