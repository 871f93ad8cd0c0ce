"""The cluster client against the real apiserver.

Covers: typed errors for each status class, create/get/list/patch/delete, read-modify-write that
survives a concurrent writer (409), status-subresource writes, and the watch cache: initial list,
live events, resuming, and relisting after 410 Gone.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from klt_common.clients import cluster as k8s


def _cm(name: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


async def test_create_get_list_patch_delete_round_trip(
    cluster: k8s.ClusterClient, namespace: str
) -> None:
    created = await cluster.create(k8s.CONFIGMAPS, _cm("a", x="1"), namespace)
    assert created["metadata"]["namespace"] == namespace
    got = await cluster.get(k8s.CONFIGMAPS, "a", namespace)
    assert got["data"] == {"x": "1"}
    patched = await cluster.patch(k8s.CONFIGMAPS, "a", {"data": {"y": "2"}}, namespace)
    assert patched["data"] == {"x": "1", "y": "2"}
    listed = await cluster.list(k8s.CONFIGMAPS, namespace)
    names = {item["metadata"]["name"] for item in listed.items}
    assert "a" in names
    assert all(item["kind"] == "ConfigMap" for item in listed.items)
    assert listed.resource_version
    await cluster.delete(k8s.CONFIGMAPS, "a", namespace)
    assert await cluster.get_or_none(k8s.CONFIGMAPS, "a", namespace) is None


async def test_errors_are_typed(cluster: k8s.ClusterClient, namespace: str) -> None:
    with pytest.raises(k8s.NotFound):
        await cluster.get(k8s.CONFIGMAPS, "missing", namespace)
    await cluster.create(k8s.CONFIGMAPS, _cm("dup"), namespace)
    with pytest.raises(k8s.AlreadyExists):
        await cluster.create(k8s.CONFIGMAPS, _cm("dup"), namespace)
    with pytest.raises(k8s.Invalid):
        await cluster.create(k8s.CONFIGMAPS, _cm("Not_A_Valid_Name"), namespace)
    stale = await cluster.get(k8s.CONFIGMAPS, "dup", namespace)
    await cluster.patch(k8s.CONFIGMAPS, "dup", {"data": {"v": "1"}}, namespace)
    with pytest.raises(k8s.Conflict):
        await cluster.replace(k8s.CONFIGMAPS, stale)


async def test_update_retries_after_a_concurrent_write(
    cluster: k8s.ClusterClient, namespace: str
) -> None:
    await cluster.create(k8s.CONFIGMAPS, _cm("counter", n="0"), namespace)
    attempts = 0

    async def bump(obj: dict[str, Any]) -> dict[str, Any]:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            # Another writer gets in between our read and our write.
            await cluster.patch(k8s.CONFIGMAPS, "counter", {"data": {"other": "x"}}, namespace)
        obj["data"]["n"] = str(int(obj["data"]["n"]) + 1)
        return obj

    stored = await cluster.update(k8s.CONFIGMAPS, "counter", namespace, bump)
    assert attempts == 2
    assert stored is not None
    assert stored["data"] == {"n": "1", "other": "x"}


async def test_update_without_change_writes_nothing(
    cluster: k8s.ClusterClient, namespace: str
) -> None:
    before = await cluster.create(k8s.CONFIGMAPS, _cm("same", a="1"), namespace)
    assert await cluster.update(k8s.CONFIGMAPS, "same", namespace, lambda obj: obj) is None
    after = await cluster.get(k8s.CONFIGMAPS, "same", namespace)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


async def _next_event(queue: asyncio.Queue[k8s.WatchEvent], name: str) -> k8s.WatchEvent:
    while True:
        event = await asyncio.wait_for(queue.get(), timeout=15)
        if event.object["metadata"]["name"] == name:
            return event


async def test_watch_cache_lists_then_follows_changes(
    cluster: k8s.ClusterClient, namespace: str
) -> None:
    await cluster.create(k8s.CONFIGMAPS, _cm("before"), namespace)
    cache = k8s.WatchCache(cluster, k8s.CONFIGMAPS, namespace=namespace)
    events = cache.subscribe()
    stop = asyncio.Event()
    runner = asyncio.create_task(cache.run(stop))
    try:
        await cache.wait_synced(timeout=15)
        assert cache.get("before", namespace) is not None
        await cluster.create(k8s.CONFIGMAPS, _cm("after", k="v"), namespace)
        event = await _next_event(events, "after")
        assert event.type == "ADDED"
        assert cache.get("after", namespace)["data"] == {"k": "v"}  # type: ignore[index]
        await cluster.delete(k8s.CONFIGMAPS, "before", namespace)
        event = await _next_event(events, "before")
        assert event.type == "DELETED"
        assert cache.get("before", namespace) is None
    finally:
        stop.set()
        await runner


async def test_watch_cache_relists_after_410_and_reports_what_it_missed(
    cluster: k8s.ClusterClient, namespace: str
) -> None:
    await cluster.create(k8s.CONFIGMAPS, _cm("kept"), namespace)
    await cluster.create(k8s.CONFIGMAPS, _cm("removed"), namespace)
    cache = k8s.WatchCache(cluster, k8s.CONFIGMAPS, namespace=namespace)
    await cache._relist()  # the initial list, without starting the watch
    assert cache.relists == 1
    # While "nobody watches", one object goes away and one appears; then the cache resumes
    # from a resourceVersion the apiserver has long compacted away.
    await cluster.delete(k8s.CONFIGMAPS, "removed", namespace)
    await cluster.create(k8s.CONFIGMAPS, _cm("appeared"), namespace)
    cache.resource_version = "1"
    events = cache.subscribe()
    stop = asyncio.Event()
    runner = asyncio.create_task(cache.run(stop))
    try:
        seen: dict[str, str] = {}
        while set(seen) != {"removed", "appeared"}:
            event = await asyncio.wait_for(events.get(), timeout=15)
            seen[event.object["metadata"]["name"]] = event.type
        assert seen == {"removed": "DELETED", "appeared": "ADDED"}
        assert cache.relists >= 2
        assert cache.get("kept", namespace) is not None
        assert cache.get("removed", namespace) is None
    finally:
        stop.set()
        await runner
