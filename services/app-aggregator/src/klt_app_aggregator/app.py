"""Wiring of the app-aggregator service: what it registers on the service template.

- the ``klt-app-aggregator`` consumer group handles ``PodAdmitted`` from ``klt.discovery``
  (the fast path: everything for a new workload within milliseconds of its admission);
- watch caches of KeptnWorkloads, KeptnApps, KeptnAppCreationRequests, KeptnConfigs,
  namespaces (for the shard label) and unscheduled pending pods;
- the reconciler: one pump per cache feeding a keyed delay queue, its workers reconciling
  off, and the periodic resync (the correct path: whatever the events missed).

The domain steps live in :mod:`.aggregator`, the pure rules in :mod:`.rules`.
"""

from __future__ import annotations

import functools

from klt_app_aggregator.aggregator import (
    KEPTN_APP_CREATION_REQUESTS,
    KEPTN_APPS,
    KEPTN_CONFIGS,
    KEPTN_WORKLOADS,
    Aggregator,
    Metrics,
)
from klt_app_aggregator.reconciler import UNSCHEDULED_PENDING, Reconciler
from klt_app_aggregator.rules import WorkloadIdentity
from klt_app_aggregator.settings import AppAggregatorSettings
from klt_common.clients import bus
from klt_common.clients import cluster as k8s
from klt_common.clients.events_recorder import EventRecorder
from klt_common.service import ServiceContext
from klt_common.structs import events

CONSUMER_GROUP = "klt-app-aggregator"


async def setup(context: ServiceContext[AppAggregatorSettings]) -> None:
    settings = context.settings.aggregation
    cluster = context.cluster
    ns = settings.namespace
    aggregator = Aggregator(
        cluster=cluster,
        publisher=context.publisher,
        settings=settings,
        source=context.source,
        tracer=context.tracer,
        recorder=EventRecorder(
            cluster,
            component="klt-app-aggregator",
            instance=context.instance,
            enabled=settings.record_events,
        ),
        workloads=k8s.WatchCache(cluster, KEPTN_WORKLOADS, namespace=ns),
        apps=k8s.WatchCache(cluster, KEPTN_APPS, namespace=ns),
        requests=k8s.WatchCache(cluster, KEPTN_APP_CREATION_REQUESTS, namespace=ns),
        configs=k8s.WatchCache(cluster, KEPTN_CONFIGS, namespace=settings.keptn_config_namespace),
        namespaces=k8s.WatchCache(cluster, k8s.NAMESPACES),
        metrics=Metrics(context.registry),
    )
    pods = k8s.WatchCache(cluster, k8s.PODS, namespace=ns, field_selector=UNSCHEDULED_PENDING)
    reconciler = Reconciler(
        aggregator,
        pods=pods,
        settings=settings,
        drain_seconds=context.settings.shutdown.grace_seconds / 2,
    )
    for cache in reconciler.caches:
        context.watch(cache)

    async def on_pod_admitted(
        envelope: events.Envelope[events.PodAdmitted], _where: bus.Coordinates
    ) -> None:
        data = envelope.data
        if not await aggregator.admits(data.namespace):
            return
        await aggregator.handle_admission(WorkloadIdentity.from_event(data))

    context.closers.append(aggregator.close)

    consumer = context.consumer(CONSUMER_GROUP)
    consumer.register(events.PodAdmitted, on_pod_admitted)

    stop = context.stop
    for plural, queue, on_event in reconciler.subscriptions:
        context.loop(f"changes:{plural}", functools.partial(Reconciler.pump, queue, on_event, stop))
    context.loop("reconcile", lambda: reconciler.queue.run(stop))
    context.loop("resync", lambda: reconciler.resync_loop(stop))
