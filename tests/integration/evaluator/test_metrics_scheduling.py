"""When KeptnMetrics are fetched: on their interval from ``status.lastUpdated`` (so a restart does
not fetch early), at once when new or changed, never after deletion, and never in a hot loop.

The provider is the generic HTTP one, served by the test, so every fetch is a request the test
can count and time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import datetime

import pytest
from evaluator_kit import (
    FakeProvider,
    StartEvaluator,
    make_metric,
    make_provider,
    metric_status,
    wait_metric,
    wait_until,
)

from klt_common.clients import cluster as k8s

METRICS = k8s.keptn_resource("KeptnMetric")
GENERIC = {"evaluator.klt.sh/provider-type": "http"}


@pytest.fixture
async def fake() -> AsyncIterator[FakeProvider]:
    server = await FakeProvider().start()
    for name, value in (("a", 1), ("b", 2), ("c", 3)):
        server.answer("GET", f"/{name}", {"value": value})
    yield server
    await server.stop()


def stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def test_a_restarted_evaluator_waits_out_the_interval_from_last_updated(
    cluster: k8s.ClusterClient,
    namespace: str,
    shard: str,
    fake: FakeProvider,
    evaluator: StartEvaluator,
) -> None:
    await make_provider(cluster, namespace, "web", fake.url, annotations=GENERIC)
    await make_metric(cluster, namespace, shard, "m", "/a $.value", provider="web", interval=6)
    first = await evaluator()
    status = await wait_metric(cluster, namespace, "m", value="1")
    await first.close()
    assert len(fake.requests_to("/a")) == 1
    await evaluator()
    await asyncio.sleep(2.0)
    assert len(fake.requests_to("/a")) == 1, "the new incarnation fetched before the interval"
    await wait_until(lambda: asyncio.sleep(0, len(fake.requests_to("/a")) == 2), timeout=15)
    second = fake.requests_to("/a")[1]
    # Due at lastUpdated + 6 s (lastUpdated is written after the answer, hence the slack).
    assert second.at >= stamp(status["lastUpdated"]) + 6 - 0.1


async def test_new_and_changed_metrics_are_fetched_at_once_and_deleted_ones_never_again(
    cluster: k8s.ClusterClient,
    namespace: str,
    shard: str,
    fake: FakeProvider,
    evaluator: StartEvaluator,
) -> None:
    await make_provider(cluster, namespace, "web", fake.url, annotations=GENERIC)
    await make_metric(cluster, namespace, shard, "slow", "/a $.value", provider="web", interval=600)
    running = await evaluator()
    await wait_metric(cluster, namespace, "slow", value="1")

    created = time.time()
    await make_metric(
        cluster, namespace, shard, "added", "/b $.value", provider="web", interval=600
    )
    await wait_metric(cluster, namespace, "added", value="2", timeout=5)
    assert fake.requests_to("/b")[0].at - created < 2.0

    changed = time.time()
    await cluster.patch(METRICS, "slow", {"spec": {"query": "/c $.value"}}, namespace)
    await wait_metric(cluster, namespace, "slow", value="3", timeout=5)
    assert fake.requests_to("/c")[0].at - changed < 2.0

    code, text = await running.get("/metrics")
    assert 'added{metric="added"' in text
    await cluster.delete(METRICS, "added", namespace)

    async def gauge_gone() -> bool:
        _, text = await running.get("/metrics")
        return 'added{metric="added"' not in text

    await wait_until(gauge_gone, timeout=10)
    assert code == 200
    fetched = len(fake.requests_to("/b"))
    await asyncio.sleep(2.5)  # a one-second metric, deleted: no further fetch
    assert len(fake.requests_to("/b")) == fetched


async def test_a_zero_interval_is_floored_instead_of_looping_hot(
    cluster: k8s.ClusterClient,
    namespace: str,
    shard: str,
    fake: FakeProvider,
    evaluator: StartEvaluator,
) -> None:
    await make_provider(cluster, namespace, "web", fake.url, annotations=GENERIC)
    await make_metric(cluster, namespace, shard, "zero", "/a $.value", provider="web", interval=0)
    await evaluator(min_fetch_interval_seconds=1.0)
    await wait_metric(cluster, namespace, "zero", value="1")
    before = len(fake.requests_to("/a"))
    await asyncio.sleep(3.0)
    assert 2 <= len(fake.requests_to("/a")) - before <= 4
    assert (await metric_status(cluster, namespace, "zero"))["value"] == "1"
