"""Fixtures for the aggregator tests: a namespace that only the test's own aggregator manages."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import pytest

from klt_app_aggregator.settings import SHARD_LABEL


@pytest.fixture
async def namespace(namespace_factory: Callable[..., Awaitable[str]]) -> str:
    """A fresh namespace labelled as its own aggregator shard (the shard is its name; see
    aggregator_kit), so the stack's aggregator, which takes the unlabelled namespaces, never
    races the test's."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    return await namespace_factory({SHARD_LABEL: name}, name=name)
