"""The scheduler's DORA and active gauges, kept from watch events, always equal what Keptn's
rule computes from scratch over every object (which Keptn does on each scrape).

The watch cache here is a stand-in with the three things the book uses (``synced``, ``values``
and ``subscribe``) and the cache's delivery contract: the initial list publishes nothing, later
changes reach every subscriber in order.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from klt_common.clients.cluster import WatchCache, WatchEvent
from klt_scheduler import metrics

Body = dict[str, Any]


class _Cache:
    def __init__(self) -> None:
        self.store: dict[tuple[str, str], Body] = {}
        self.synced = False
        self._queues: list[asyncio.Queue[WatchEvent]] = []

    def values(self) -> list[Body]:
        return list(self.store.values())

    def subscribe(self) -> asyncio.Queue[WatchEvent]:
        queue: asyncio.Queue[WatchEvent] = asyncio.Queue()
        self._queues.append(queue)
        return queue

    def change(self, kind: str, obj: Body) -> None:
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        if kind == "DELETED":
            if self.store.pop(key, None) is None:
                return
        else:
            kind = "MODIFIED" if key in self.store else "ADDED"
            self.store[key] = obj
        if self.synced:
            for queue in self._queues:
                queue.put_nowait(WatchEvent(kind, obj))


class _World:
    """The scope: only ``ns-a`` is this scheduler's."""

    def admits(self, namespace: str) -> bool:
        return namespace == "ns-a"


def _app_version(
    namespace: str, app: str, version: str, suffix: str, previous: str, times: tuple[int, int]
) -> Body:
    status: Body = {}
    start, end = times
    if start >= 0:
        status["startTime"] = f"2026-01-01T10:{start:02d}:00Z"
    if end >= 0:
        status["endTime"] = f"2026-01-01T11:{end:02d}:00Z"
    spec: Body = {"appName": app, "version": version}
    if previous:
        spec["previousVersion"] = previous
    return {
        "metadata": {"namespace": namespace, "name": f"{app}-{version}-{suffix}"},
        "spec": spec,
        "status": status,
    }


VERSIONS = ["1", "1.1", "2", "10"]
changes = st.tuples(
    st.sampled_from(["UPSERT", "UPSERT", "UPSERT", "DELETED"]),
    st.sampled_from(["ns-a", "ns-b"]),
    st.sampled_from(["shop", "shop-web"]),
    st.sampled_from(VERSIONS),
    st.sampled_from(["x", "y"]),
    st.sampled_from(["", *VERSIONS]),
    st.tuples(st.integers(-1, 5), st.integers(-1, 5)),
    st.booleans(),  # scrape right after this change
)


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


Series = dict[str, list[tuple[tuple[str, ...], float]]]
"""Per family, every sample's label values and value, sorted (two versions may share labels)."""


def _from_scratch(objects: list[Body]) -> Series:
    """Keptn's rule (``controllers/common/telemetry/metrics.go``) over every object in scope."""
    scoped = [o for o in objects if o["metadata"]["namespace"] == "ns-a"]
    out: Series = {
        "keptn_app_active": [],
        "keptn_app_deploymentduration": [],
        "keptn_app_deploymentinterval": [],
    }
    for obj in scoped:
        meta, spec, status = obj["metadata"], obj["spec"], obj["status"]
        previous = spec.get("previousVersion", "")
        active_key = (spec["appName"], spec["version"], meta["namespace"])
        out["keptn_app_active"].append((active_key, 0.0 if status.get("endTime") else 1.0))
        dora_key = (spec["appName"], meta["namespace"], spec["version"], previous)
        start, end = _time(status.get("startTime")), _time(status.get("endTime"))
        if start and end:
            out["keptn_app_deploymentduration"].append(
                (dora_key, max(0.0, (end - start).total_seconds()))
            )
        if not previous or end is None:
            continue
        prefix = f"{spec['appName']}-{previous}"
        candidates = sorted(
            (o for o in scoped if o["metadata"]["name"].startswith(prefix)),
            key=lambda o: o["metadata"]["name"],  # the apiserver lists by name
        )
        first = None
        for candidate in candidates:
            if first is None or candidate["status"].get("startTime", "") < first["status"].get(
                "startTime", ""
            ):
                first = candidate
        first_end = _time(first["status"].get("endTime")) if first else None
        if first_end is not None:
            out["keptn_app_deploymentinterval"].append(
                (dora_key, (end - first_end).total_seconds())
            )
    return {name: sorted(samples) for name, samples in out.items()}


def _scraped(registry: CollectorRegistry) -> Series:
    return {
        family.name: sorted((tuple(s.labels.values()), s.value) for s in family.samples)
        for family in registry.collect()
        if family.name.startswith("keptn_app_")
    }


def _gauges(cache: _Cache) -> tuple[CollectorRegistry, metrics._Book]:
    registry = CollectorRegistry()
    apps = metrics._Book(cast(WatchCache, cache), "appName")
    workloads = metrics._Book(cast(WatchCache, _Cache()), "workloadName")
    registry.register(metrics._BookGauges(cast(Any, _World()), apps, workloads))
    return registry, apps


@settings(max_examples=300, deadline=None)
@given(before=st.lists(changes, max_size=6), after=st.lists(changes, max_size=30))
def test_incremental_gauges_equal_keptns_rule_from_scratch(
    before: list[tuple[Any, ...]], after: list[tuple[Any, ...]]
) -> None:
    cache = _Cache()
    registry, _ = _gauges(cache)
    for index, change in enumerate([*before, *after]):
        if index == len(before):
            cache.synced = True  # the changes before were the initial list: no events
        kind, namespace, app, version, suffix, previous, times, scrape = change
        cache.change(kind, _app_version(namespace, app, version, suffix, previous, times))
        if scrape and cache.synced:
            assert _scraped(registry) == _from_scratch(cache.values())
    cache.synced = True
    assert _scraped(registry) == _from_scratch(cache.values())


async def test_the_follow_task_applies_events_without_a_scrape() -> None:
    cache = _Cache()
    registry, book = _gauges(cache)
    cache.synced = True
    stop = asyncio.Event()
    task = asyncio.create_task(book.run(stop))
    cache.change("ADDED", _app_version("ns-a", "shop", "2", "x", "1", (0, -1)))
    cache.change("ADDED", _app_version("ns-a", "shop", "1", "x", "", (0, 3)))
    cache.change("MODIFIED", _app_version("ns-a", "shop", "2", "x", "1", (0, 5)))
    for _ in range(100):  # loop turns, not time: the task only needs to run
        if book.intervals:
            break
        await asyncio.sleep(0)
    # Read the book directly: a scrape would catch up by itself.
    assert book.intervals == {("ns-a", "shop-2-x"): 120.0}
    stop.set()
    await asyncio.wait_for(task, 5)
    assert _scraped(registry)["keptn_app_deploymentinterval"] == [
        (("shop", "ns-a", "2", "1"), 120.0)
    ]
