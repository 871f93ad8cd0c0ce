"""From PodAdmitted to KeptnAppVersion on the real apiserver and Kafka.

Each test runs its own aggregator (scoped to the test's namespace and topic prefix), publishes
what the webhook would, and checks the objects against Keptn's rules:

- KeptnWorkload ``<app>-<workload>`` (spec, owner), KeptnWorkloadVersion
  ``<app>-<workload>-<version>`` (spec, owner, previousVersion), KeptnApp (managed-by label,
  workloads sorted, version rule) and KeptnAppVersion ``<app>-<version>-<hash(generation)>``;
- a single-service app is created at once, a multi-service app only after its window, with
  workloads of all three supported controller kinds;
- a user's KeptnApp is never overwritten, yet gets its versions;
- a revision bump creates a new app version and deprecates the old one;
- the KeptnAppContext's checks and metadata are merged into the app version;
- a KeptnConfig sets the window;
- the scheduler is told about every version, with ids fixed by the object.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aggregator_kit import (
    APPS,
    CONFIGS,
    CONTEXTS,
    KACR,
    KAV,
    KW,
    KWV,
    admitted,
    aggregator_settings,
    create_daemonset,
    create_deployment,
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


def _owner(obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "name": obj["metadata"]["name"],
        "uid": obj["metadata"]["uid"],
    }


def _controller(obj: dict[str, Any]) -> dict[str, Any]:
    return {**_owner(obj), "controller": True, "blockOwnerDeletion": True}


async def test_a_single_service_deployment_gets_workload_app_and_versions_at_once(
    cluster: k8s.ClusterClient,
    namespace: str,
    bus_settings: BusSettings,
    cluster_settings: ClusterSettings,
) -> None:
    # A long window: a single-service app must not wait for it.
    settings = aggregator_settings(
        bus_settings, cluster_settings, namespace, creation_request_timeout_seconds=300
    )
    rs = await create_deployment(cluster, namespace, "web")
    event = admitted(
        rs,
        app="web",
        workload_key="web",
        version="1.2.0",
        single_service=True,
        pre_deployment_tasks=("check-db",),
        post_deployment_evaluations=("slo",),
        metadata={"team": "payments"},
    )
    async with (
        listening(bus_settings) as seen,
        running(settings),
        bus.Publisher(bus_settings, client_id="test") as publisher,
    ):
        started = time.monotonic()
        await publisher.publish(event, source="/test/webhook")
        kav = await eventually(
            lambda: cluster.get_or_none(KAV, "web-1.2.0-6b86b273", namespace),
            what="the KeptnAppVersion",
        )
        elapsed = time.monotonic() - started
        await eventually(
            lambda: _async(bool(seen.apps and seen.workloads)), what="the announcements"
        )

    assert elapsed < 10, f"a single-service app took {elapsed:.1f}s"

    kw = await cluster.get(KW, "web-web", namespace)
    assert kw["spec"] == {
        "app": "web",
        "version": "1.2.0",
        "preDeploymentTasks": ["check-db"],
        "postDeploymentEvaluations": ["slo"],
        "resourceReference": {
            "uid": rs["metadata"]["uid"],
            "kind": "ReplicaSet",
            "name": rs["metadata"]["name"],
        },
        "metadata": {"team": "payments"},
    }
    assert kw["metadata"]["ownerReferences"] == [_owner(rs)]
    assert kw["status"] == {"currentVersion": "1.2.0"}

    kwv = await cluster.get(KWV, "web-web-1.2.0", namespace)
    assert kwv["spec"] == {**kw["spec"], "workloadName": "web-web"}
    assert kwv["metadata"]["ownerReferences"] == [_controller(kw)]

    app = await cluster.get(APPS, "web", namespace)
    assert app["metadata"]["labels"] == {disc.MANAGED_BY_LABEL: "keptn"}
    assert app["metadata"]["annotations"][disc.APP_TYPE] == "single-service"
    assert app["spec"] == {
        "version": "1.2.0",
        "revision": 1,
        "workloads": [{"name": "web", "version": "1.2.0"}],
    }
    assert app["status"] == {"currentVersion": "1.2.0"}

    # The version's own trace starts here (tests/integration/observability follows it).
    assert kav["spec"].pop("traceId")["traceparent"].startswith("00-")
    assert kav["spec"] == {
        "appName": "web",
        "version": "1.2.0",
        "revision": 1,
        "workloads": [{"name": "web", "version": "1.2.0"}],
    }
    assert kav["metadata"]["ownerReferences"] == [_controller(app)]
    assert await cluster.get_or_none(KACR, "web", namespace) is None

    [app_event] = {e.id: e for e in seen.apps}.values()
    assert app_event.data.app_version_name == "web-1.2.0-6b86b273"
    assert (app_event.data.version, app_event.data.revision, app_event.data.generation) == (
        "1.2.0",
        1,
        1,
    )
    assert app_event.partitionkey == f"{namespace}/web"
    [workload_event] = {e.id: e for e in seen.workloads}.values()
    assert workload_event.data.workload_version_name == "web-web-1.2.0"
    assert workload_event.data.workload == "web-web"


async def _async(value: Any) -> Any:
    return value


async def test_a_multi_service_app_waits_for_its_window_and_gathers_every_kind(
    cluster: k8s.ClusterClient,
    namespace: str,
    bus_settings: BusSettings,
    cluster_settings: ClusterSettings,
) -> None:
    window = 4.0
    settings = aggregator_settings(
        bus_settings, cluster_settings, namespace, creation_request_timeout_seconds=window
    )
    rs = await create_deployment(cluster, namespace, "frontend")
    sts = await create_statefulset(cluster, namespace, "db")
    ds = await create_daemonset(cluster, namespace, "agent")
    async with running(settings), bus.Publisher(bus_settings, client_id="test") as publisher:
        for owner, key, version in (
            (rs, "frontend", "1.0"),
            (sts, "db", "2.0"),
            (ds, "agent", "3.0"),
        ):
            await publisher.publish(
                admitted(owner, app="shop", workload_key=key, version=version), source="/test"
            )
        request = await eventually(
            lambda: cluster.get_or_none(KACR, "shop", namespace), what="the creation request"
        )
        assert request["spec"] == {"appName": "shop"}
        assert disc.APP_TYPE not in (request["metadata"].get("annotations") or {})
        await asyncio.sleep(window / 2)
        assert await cluster.get_or_none(APPS, "shop", namespace) is None, (
            "created before the window ended"
        )
        app = await eventually(
            lambda: cluster.get_or_none(APPS, "shop", namespace), timeout=20, what="the app"
        )
        expected_version = disc.automatic_app_version(
            [("shop-frontend", "1.0"), ("shop-db", "2.0"), ("shop-agent", "3.0")]
        )
        kav_name = disc.app_version_name("shop", expected_version, 1)
        kav = await eventually(
            lambda: cluster.get_or_none(KAV, kav_name, namespace), what="the app version"
        )
        await eventually(
            lambda: _absent(cluster, KACR, "shop", namespace), what="the request's deletion"
        )

    waited = parse_time(app["metadata"]["creationTimestamp"]) - parse_time(
        request["metadata"]["creationTimestamp"]
    )
    assert waited.total_seconds() >= window
    assert app["metadata"]["labels"] == {disc.MANAGED_BY_LABEL: "keptn"}
    assert app["spec"]["workloads"] == [
        {"name": "agent", "version": "3.0"},
        {"name": "db", "version": "2.0"},
        {"name": "frontend", "version": "1.0"},
    ]
    assert app["spec"]["version"] == expected_version
    assert len(expected_version) == 10
    assert kav["spec"]["workloads"] == app["spec"]["workloads"]
    kinds = {}
    for key, version in (("frontend", "1.0"), ("db", "2.0"), ("agent", "3.0")):
        kw = await cluster.get(KW, f"shop-{key}", namespace)
        kinds[key] = kw["spec"]["resourceReference"]["kind"]
        assert await cluster.get_or_none(KWV, f"shop-{key}-{version}", namespace)
    assert kinds == {"frontend": "ReplicaSet", "db": "StatefulSet", "agent": "DaemonSet"}


async def _absent(cluster: k8s.ClusterClient, res: k8s.Resource, name: str, ns: str) -> bool:
    return await cluster.get_or_none(res, name, ns) is None


async def test_a_users_app_is_never_overwritten_but_gets_its_versions(
    cluster: k8s.ClusterClient,
    namespace: str,
    bus_settings: BusSettings,
    cluster_settings: ClusterSettings,
) -> None:
    settings = aggregator_settings(
        bus_settings, cluster_settings, namespace, creation_request_timeout_seconds=300
    )
    user_spec = {"version": "9.9", "revision": 1, "workloads": [{"name": "api", "version": "x"}]}
    await cluster.create(
        APPS,
        {
            "apiVersion": "lifecycle.keptn.sh/v1",
            "kind": "KeptnApp",
            "metadata": {"name": "mine", "namespace": namespace},
            "spec": user_spec,
        },
        namespace,
    )
    # The request the webhook (or an aggregator that did not know the app yet) left behind.
    await cluster.create(
        KACR,
        {
            "apiVersion": "lifecycle.keptn.sh/v1",
            "kind": "KeptnAppCreationRequest",
            "metadata": {"name": "mine", "namespace": namespace},
            "spec": {"appName": "mine"},
        },
        namespace,
    )
    rs = await create_deployment(cluster, namespace, "api")
    async with running(settings), bus.Publisher(bus_settings, client_id="test") as publisher:
        await publisher.publish(
            admitted(rs, app="mine", workload_key="api", version="1.0"), source="/test"
        )
        kav = await eventually(
            lambda: cluster.get_or_none(KAV, "mine-9.9-6b86b273", namespace),
            what="the user app's version",
        )
        await eventually(lambda: cluster.get_or_none(KWV, "mine-api-1.0", namespace), what="KWV")
        # Not the window (300 s): a user's app ends the request at once.
        await eventually(lambda: _absent(cluster, KACR, "mine", namespace), what="no request")
        await asyncio.sleep(1)
        app = await cluster.get(APPS, "mine", namespace)
    assert app["spec"] == user_spec
    assert disc.MANAGED_BY_LABEL not in (app["metadata"].get("labels") or {})
    assert app["status"] == {"currentVersion": "9.9"}
    assert kav["spec"]["workloads"] == user_spec["workloads"]


async def test_a_revision_bump_creates_a_new_app_version_and_deprecates_the_old(
    cluster: k8s.ClusterClient,
    namespace: str,
    bus_settings: BusSettings,
    cluster_settings: ClusterSettings,
) -> None:
    settings = aggregator_settings(bus_settings, cluster_settings, namespace)
    rs = await create_deployment(cluster, namespace, "svc")
    async with (
        listening(bus_settings) as seen,
        running(settings),
        bus.Publisher(bus_settings, client_id="test") as publisher,
    ):
        await publisher.publish(
            admitted(rs, app="svc", workload_key="svc", version="1.0", single_service=True),
            source="/test",
        )
        first = await eventually(
            lambda: cluster.get_or_none(KAV, "svc-1.0-6b86b273", namespace), what="first version"
        )
        await cluster.patch(APPS, "svc", {"spec": {"revision": 2}}, namespace)
        second = await eventually(
            lambda: cluster.get_or_none(KAV, "svc-1.0-d4735e3a", namespace), what="second version"
        )
        old = await eventually(
            lambda: _deprecated(cluster, "svc-1.0-6b86b273", namespace), what="deprecation"
        )
        await eventually(lambda: _async(len({e.id for e in seen.apps}) == 2), what="2 events")

    assert first["spec"]["revision"] == 1
    assert second["spec"]["revision"] == 2
    assert "previousVersion" not in second["spec"]  # the same version, only a new revision
    for key in (
        "preDeploymentStatus",
        "preDeploymentEvaluationStatus",
        "workloadOverallStatus",
        "postDeploymentStatus",
        "postDeploymentEvaluationStatus",
        "promotionStatus",
        "status",
    ):
        assert old["status"][key] == "Deprecated", key
    assert (second.get("status") or {}).get("status") != "Deprecated"
    generations = sorted(e.data.generation for e in {e.id: e for e in seen.apps}.values())
    assert generations == [1, 2]


async def _deprecated(cluster: k8s.ClusterClient, name: str, ns: str) -> dict[str, Any] | None:
    kav = await cluster.get(KAV, name, ns)
    return kav if (kav.get("status") or {}).get("status") == "Deprecated" else None


async def test_a_new_workload_version_moves_the_app_on_with_previous_versions(
    cluster: k8s.ClusterClient,
    namespace: str,
    bus_settings: BusSettings,
    cluster_settings: ClusterSettings,
) -> None:
    settings = aggregator_settings(bus_settings, cluster_settings, namespace)
    rs = await create_deployment(cluster, namespace, "svc")
    async with running(settings), bus.Publisher(bus_settings, client_id="test") as publisher:
        await publisher.publish(
            admitted(rs, app="svc", workload_key="svc", version="1.0", single_service=True),
            source="/test",
        )
        await eventually(lambda: cluster.get_or_none(KAV, "svc-1.0-6b86b273", namespace), what="v1")
        await publisher.publish(
            admitted(rs, app="svc", workload_key="svc", version="2.0", single_service=True),
            source="/test",
        )
        kav = await eventually(
            lambda: cluster.get_or_none(KAV, "svc-2.0-d4735e3a", namespace), what="v2"
        )
    kwv = await cluster.get(KWV, "svc-svc-2.0", namespace)
    assert kwv["spec"]["previousVersion"] == "1.0"
    assert kav["spec"]["previousVersion"] == "1.0"
    app = await cluster.get(APPS, "svc", namespace)
    assert app["spec"]["workloads"] == [{"name": "svc", "version": "2.0"}]
    assert app["status"] == {"currentVersion": "2.0"}
    assert (await cluster.get(KW, "svc-svc", namespace))["status"] == {"currentVersion": "2.0"}
    # Another version string: the first app version is left alone, not deprecated.
    old = await cluster.get(KAV, "svc-1.0-6b86b273", namespace)
    assert (old.get("status") or {}).get("status") != "Deprecated"


async def test_the_app_context_is_merged_into_the_app_version(
    cluster: k8s.ClusterClient,
    namespace: str,
    bus_settings: BusSettings,
    cluster_settings: ClusterSettings,
) -> None:
    settings = aggregator_settings(bus_settings, cluster_settings, namespace)
    context_spec = {
        "preDeploymentTasks": ["notify"],
        "postDeploymentTasks": ["smoke"],
        "preDeploymentEvaluations": ["capacity"],
        "postDeploymentEvaluations": ["slo"],
        "promotionTasks": ["promote"],
        "metadata": {"owner": "team-a", "stage": "dev"},
        "spanLinks": ["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"],
    }
    await cluster.create(
        CONTEXTS,
        {
            "apiVersion": "lifecycle.keptn.sh/v1",
            "kind": "KeptnAppContext",
            "metadata": {"name": "ctx", "namespace": namespace},
            "spec": context_spec,
        },
        namespace,
    )
    rs = await create_deployment(cluster, namespace, "ctx")
    async with running(settings), bus.Publisher(bus_settings, client_id="test") as publisher:
        await publisher.publish(
            admitted(rs, app="ctx", workload_key="ctx", version="1.0", single_service=True),
            source="/test",
        )
        kav = await eventually(
            lambda: cluster.get_or_none(KAV, "ctx-1.0-6b86b273", namespace), what="the version"
        )
    assert kav["spec"].pop("traceId")["traceparent"].startswith("00-")
    assert kav["spec"] == {
        "appName": "ctx",
        "version": "1.0",
        "revision": 1,
        "workloads": [{"name": "ctx", "version": "1.0"}],
        **context_spec,
    }


async def test_a_keptn_config_sets_the_discovery_window(
    cluster: k8s.ClusterClient,
    namespace: str,
    bus_settings: BusSettings,
    cluster_settings: ClusterSettings,
) -> None:
    # The settings say five minutes; the KeptnConfig says two seconds, and wins.
    settings = aggregator_settings(
        bus_settings, cluster_settings, namespace, creation_request_timeout_seconds=300
    )
    await cluster.create(
        CONFIGS,
        {
            "apiVersion": "options.keptn.sh/v1alpha1",
            "kind": "KeptnConfig",
            "metadata": {"name": "window", "namespace": namespace},
            "spec": {"keptnAppCreationRequestTimeoutSeconds": 2},
        },
        namespace,
    )
    try:
        rs = await create_deployment(cluster, namespace, "one")
        async with running(settings), bus.Publisher(bus_settings, client_id="test") as publisher:
            await publisher.publish(
                admitted(rs, app="pair", workload_key="one", version="1"), source="/test"
            )
            request = await eventually(
                lambda: cluster.get_or_none(KACR, "pair", namespace), what="the request"
            )
            app = await eventually(
                lambda: cluster.get_or_none(APPS, "pair", namespace), timeout=15, what="the app"
            )
    finally:
        # The stack's own aggregator may read KeptnConfigs in every namespace: do not leave a
        # two-second window behind for anyone else.
        await cluster.delete(CONFIGS, "window", namespace)
    waited = parse_time(app["metadata"]["creationTimestamp"]) - parse_time(
        request["metadata"]["creationTimestamp"]
    )
    assert 2 <= waited.total_seconds() <= 6
