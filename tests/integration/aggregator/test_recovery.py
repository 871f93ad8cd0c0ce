"""The aggregator is correct after any loss: restarts, lost events, duplicates, races, bad input.

- a restart in the middle of a discovery window ends the window on time (the deadline is
  derived from the request's creationTimestamp), and a window that ended while no aggregator
  ran is completed at start-up;
- a gated pod whose ``PodAdmitted`` never arrived gets its KeptnWorkloadVersion (keys on the
  pod, or inherited from its Deployment through the ReplicaSet), and a flow that stopped after
  the workload version gets its app;
- a duplicated event, and two replicas racing over the same apps, create nothing twice.

(A KeptnAppContext that cannot be read is covered by tests/unit/aggregator: the v1 schema
rejects such an object, and writing one through an older version needs the conversion webhook.)
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from aggregator_kit import (
    APPS,
    KACR,
    KAV,
    KW,
    KWV,
    admitted,
    aggregator_settings,
    create_deployment,
    create_gated_pod,
    create_statefulset,
    eventually,
    listening,
    parse_time,
    running,
)

from klt_common.clients import bus
from klt_common.clients import cluster as k8s
from klt_common.configs.settings import BusSettings, ClusterSettings
from klt_common.structs import discovery as disc


async def _now(value: Any) -> Any:
    return value


async def _absent(cluster: k8s.ClusterClient, res: k8s.Resource, name: str, ns: str) -> bool:
    return await cluster.get_or_none(res, name, ns) is None


async def test_a_restart_mid_window_still_ends_the_window_on_time(
    cluster: k8s.ClusterClient,
    namespace: str,
    bus_settings: BusSettings,
    cluster_settings: ClusterSettings,
) -> None:
    window = 6.0
    settings = aggregator_settings(
        bus_settings, cluster_settings, namespace, creation_request_timeout_seconds=window
    )
    rs = await create_deployment(cluster, namespace, "a")
    async with running(settings), bus.Publisher(bus_settings, client_id="test") as publisher:
        await publisher.publish(admitted(rs, app="duo", workload_key="a", version="1"), source="/t")
        request = await eventually(
            lambda: cluster.get_or_none(KACR, "duo", namespace), what="the request"
        )
    # Down for four seconds: a timer restarted from zero would end at least 10 s after the
    # request was made; one derived from its creationTimestamp ends at 6 s.
    await asyncio.sleep(4)
    assert await cluster.get_or_none(APPS, "duo", namespace) is None
    async with running(settings):
        app = await eventually(
            lambda: cluster.get_or_none(APPS, "duo", namespace), timeout=20, what="the app"
        )
        await eventually(
            lambda: cluster.get_or_none(KAV, disc.app_version_name("duo", "1", 1), namespace),
            what="the app version",
        )
    waited = (
        parse_time(app["metadata"]["creationTimestamp"])
        - parse_time(request["metadata"]["creationTimestamp"])
    ).total_seconds()
    # Timestamps have one-second resolution (6 s may read as 7), and a loaded machine adds a
    # little; a restarted timer would read 10 or more.
    assert window <= waited < window + 3, waited


async def test_a_window_that_ended_while_no_aggregator_ran_is_completed_at_start(
    cluster: k8s.ClusterClient,
    namespace: str,
    bus_settings: BusSettings,
    cluster_settings: ClusterSettings,
) -> None:
    settings = aggregator_settings(
        bus_settings, cluster_settings, namespace, creation_request_timeout_seconds=2
    )
    rs = await create_deployment(cluster, namespace, "a")
    async with running(settings), bus.Publisher(bus_settings, client_id="test") as publisher:
        await publisher.publish(
            admitted(rs, app="late", workload_key="a", version="1"), source="/t"
        )
        await eventually(lambda: cluster.get_or_none(KACR, "late", namespace), what="the request")
    await asyncio.sleep(3)
    async with running(settings) as aggregator:
        started = time.monotonic()
        await eventually(lambda: cluster.get_or_none(APPS, "late", namespace), what="the app")
        elapsed = time.monotonic() - started
        assert aggregator.metric("klt_aggregator_writes_total", kind="KeptnApp", verb="create") == 1
    assert elapsed < 5, f"a due request took {elapsed:.1f}s after start"


async def test_a_gated_pod_without_its_event_gets_its_workload_version(
    cluster: k8s.ClusterClient,
    namespace: str,
    bus_settings: BusSettings,
    cluster_settings: ClusterSettings,
) -> None:
    settings = aggregator_settings(bus_settings, cluster_settings, namespace)
    # Keys on the pod itself (as the webhook leaves them).
    sts = await create_statefulset(cluster, namespace, "cache")
    await create_gated_pod(
        cluster,
        namespace,
        "cache-x",
        sts,
        {disc.WORKLOAD: "cache", disc.VERSION: "3.1", disc.PRE_TASKS: "warm-up"},
    )
    # No keys on the pod: inherited from the Deployment, found through the ReplicaSet.
    rs = await create_deployment(
        cluster,
        namespace,
        "front",
        annotations={disc.WORKLOAD: "front", disc.APP: "store", disc.VERSION: "7"},
    )
    await create_gated_pod(cluster, namespace, "front-x", rs)
    async with running(settings) as aggregator:
        kwv = await eventually(
            lambda: cluster.get_or_none(KWV, "cache-cache-3.1", namespace), what="cache's KWV"
        )
        await eventually(
            lambda: cluster.get_or_none(KAV, "cache-3.1-6b86b273", namespace), what="cache's KAV"
        )
        await eventually(
            lambda: cluster.get_or_none(KWV, "store-front-7", namespace), what="front's KWV"
        )
        app = await eventually(
            lambda: cluster.get_or_none(APPS, "store", namespace), timeout=20, what="store"
        )
        repairs = aggregator.metric("klt_aggregator_repairs_total", what="workload-version")
    assert repairs == 2
    assert kwv["spec"]["preDeploymentTasks"] == ["warm-up"]
    assert kwv["spec"]["resourceReference"]["kind"] == "StatefulSet"
    kw = await cluster.get(KW, "store-front", namespace)
    assert kw["spec"]["resourceReference"] == {
        "uid": rs["metadata"]["uid"],
        "kind": "ReplicaSet",
        "name": rs["metadata"]["name"],
    }
    assert app["spec"]["workloads"] == [{"name": "front", "version": "7"}]


async def test_a_flow_stopped_after_the_workload_version_gets_its_app_from_the_gated_pod(
    cluster: k8s.ClusterClient,
    namespace: str,
    bus_settings: BusSettings,
    cluster_settings: ClusterSettings,
) -> None:
    settings = aggregator_settings(
        bus_settings, cluster_settings, namespace, creation_request_timeout_seconds=2
    )
    rs = await create_deployment(cluster, namespace, "half")
    await create_gated_pod(
        cluster,
        namespace,
        "half-x",
        rs,
        {disc.WORKLOAD: "half", disc.APP: "cut", disc.VERSION: "1"},
    )
    async with (
        running(
            settings,
        ) as aggregator,
        bus.Publisher(bus_settings, client_id="t") as pub,
    ):
        await pub.publish(admitted(rs, app="cut", workload_key="half", version="1"), source="/t")
        await eventually(lambda: cluster.get_or_none(KACR, "cut", namespace), what="the request")
        # As if the handler had died right before the request: it is gone, nothing else is.
        await cluster.delete(KACR, "cut", namespace)
        app = await eventually(
            lambda: cluster.get_or_none(APPS, "cut", namespace), timeout=20, what="the app"
        )
        repairs = aggregator.metric("klt_aggregator_repairs_total", what="creation-request")
    assert app["spec"]["workloads"] == [{"name": "half", "version": "1"}]
    assert app["metadata"]["labels"][disc.MANAGED_BY_LABEL] == disc.MANAGED_BY_KEPTN
    # On a loaded machine the two-second window can end before the test deletes the request;
    # then the app came the normal way and there was nothing to repair.
    assert repairs in (0, 1)


async def test_duplicate_events_create_nothing_twice(
    cluster: k8s.ClusterClient,
    namespace: str,
    bus_settings: BusSettings,
    cluster_settings: ClusterSettings,
) -> None:
    settings = aggregator_settings(
        bus_settings, cluster_settings, namespace, creation_request_timeout_seconds=2
    )
    web = await create_deployment(cluster, namespace, "web")
    tail = await create_deployment(cluster, namespace, "tail")
    event = admitted(web, app="dup", workload_key="web", version="1")
    async with (
        listening(bus_settings) as seen,
        running(settings) as aggregator,
        bus.Publisher(bus_settings, client_id="test") as publisher,
    ):
        fixed_id = str(uuid.uuid4())
        await publisher.publish(event, source="/t", event_id=fixed_id)  # the original
        await publisher.publish(event, source="/t", event_id=fixed_id)  # a redelivery
        other_pod = event.model_copy(update={"pod_name": "web-2", "pod_uid": "u-2"})
        await publisher.publish(other_pod, source="/t")  # another replica of the same workload
        # Same app, same partition: once this one is handled, all the above were.
        await publisher.publish(
            admitted(tail, app="dup", workload_key="tail", version="1"), source="/t"
        )
        await eventually(lambda: cluster.get_or_none(KW, "dup-tail", namespace), what="the tail")
        app = await eventually(
            lambda: cluster.get_or_none(APPS, "dup", namespace), timeout=15, what="the app"
        )
        await eventually(
            lambda: cluster.get_or_none(
                KAV, disc.app_version_name("dup", app["spec"]["version"], 1), namespace
            ),
            what="the app version",
        )
        await eventually(lambda: _now(bool(seen.apps)), what="the announcement")
        writes = {
            (kind, verb): aggregator.metric("klt_aggregator_writes_total", kind=kind, verb=verb)
            for kind in (
                "KeptnWorkload",
                "KeptnWorkloadVersion",
                "KeptnAppCreationRequest",
                "KeptnApp",
                "KeptnAppVersion",
            )
            for verb in ("create", "update")
        }
    assert writes[("KeptnWorkload", "create")] == 2
    assert writes[("KeptnWorkload", "update")] == 0
    assert writes[("KeptnWorkloadVersion", "create")] == 2
    assert writes[("KeptnWorkloadVersion", "update")] == 0
    assert writes[("KeptnAppCreationRequest", "create")] == 1
    assert writes[("KeptnApp", "create")] == 1
    assert writes[("KeptnApp", "update")] == 0
    assert writes[("KeptnAppVersion", "create")] == 1
    for res, count in ((KW, 2), (KWV, 2), (APPS, 1), (KAV, 1), (KACR, 0)):
        assert len((await cluster.list(res, namespace)).items) == count, res.kind
    # Announced again while the scheduler (absent here) has not picked a version up, always
    # under the same id: one id per object.
    assert len({e.id for e in seen.workloads}) == 2
    assert len({e.id for e in seen.apps}) == 1


async def test_two_replicas_racing_create_each_object_once(
    cluster: k8s.ClusterClient,
    namespace: str,
    bus_settings: BusSettings,
    cluster_settings: ClusterSettings,
) -> None:
    settings = aggregator_settings(
        bus_settings, cluster_settings, namespace, creation_request_timeout_seconds=2
    )
    singles = [await create_deployment(cluster, namespace, f"s{i}") for i in range(5)]
    parts = [await create_deployment(cluster, namespace, f"p{i}") for i in range(3)]
    orphan = await create_statefulset(cluster, namespace, "orphan")
    await create_gated_pod(
        cluster, namespace, "orphan-x", orphan, {disc.WORKLOAD: "orphan", disc.VERSION: "1"}
    )
    async with (
        running(settings),
        running(settings),
        bus.Publisher(bus_settings, client_id="test") as publisher,
    ):
        for i, rs in enumerate(singles):
            for _ in range(2):
                await publisher.publish(
                    admitted(
                        rs, app=f"s{i}", workload_key=f"s{i}", version="1", single_service=True
                    ),
                    source="/t",
                )
        for i, rs in enumerate(parts):
            await publisher.publish(
                admitted(rs, app="multi", workload_key=f"p{i}", version="1"), source="/t"
            )
        multi_version = disc.automatic_app_version([(f"multi-p{i}", "1") for i in range(3)])
        expected = {f"s{i}-1-6b86b273" for i in range(5)} | {
            disc.app_version_name("multi", multi_version, 1),
            "orphan-1-6b86b273",
        }

        async def all_versions() -> bool:
            names = {o["metadata"]["name"] for o in (await cluster.list(KAV, namespace)).items}
            return names == expected

        await eventually(all_versions, timeout=30, what="every app version")
        await asyncio.sleep(3)  # a resync of each replica on top
    assert len((await cluster.list(KAV, namespace)).items) == len(expected)
    assert len((await cluster.list(APPS, namespace)).items) == 7
    assert len((await cluster.list(KWV, namespace)).items) == 9
    assert not (await cluster.list(KACR, namespace)).items
    multi = await cluster.get(APPS, "multi", namespace)
    assert [w["name"] for w in multi["spec"]["workloads"]] == ["p0", "p1", "p2"]
    assert multi["metadata"]["generation"] == 1
