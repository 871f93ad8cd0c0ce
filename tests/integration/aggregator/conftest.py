"""Fixtures for the aggregator tests: a namespace that only the test's own aggregator manages."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from klt_app_aggregator.settings import SHARD_LABEL
from klt_common.clients import cluster as k8s


@pytest.fixture
async def namespace(cluster: k8s.ClusterClient) -> AsyncIterator[str]:
    """A fresh namespace labelled as its own aggregator shard (the shard is its name), so the
    stack's aggregator, which takes the unlabelled namespaces, never races the test's."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    await cluster.create(
        k8s.NAMESPACES,
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": {SHARD_LABEL: name}},
        },
    )
    yield name
    await cluster.delete(k8s.NAMESPACES, name)
