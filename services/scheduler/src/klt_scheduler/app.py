"""Wiring of the scheduler service: what it registers on the service template.

- ``World``: the watch caches (app and workload versions, tasks, evaluations, definitions,
  KeptnConfig, KeptnApps, ReplicaSets/StatefulSets/DaemonSets/Rollouts, gated pods);
- ``Engine``: the reconcile passes that move app and workload versions through their phases
  and release the scheduling gate;
- ``Triggers``: the consumer group on ``klt.lifecycle``, the watch-event triggers and the
  periodic resync that run the passes;
- ``Meters``: Keptn's deployment metrics; its gauges follow the version caches' events.

The service is ready once every cache has synced; until then the bus handlers wait.
"""

from __future__ import annotations

from klt_common.service import ServiceContext
from klt_scheduler.engine import Engine
from klt_scheduler.metrics import Meters
from klt_scheduler.settings import SchedulerSettings
from klt_scheduler.triggers import Triggers
from klt_scheduler.world import World


async def setup(context: ServiceContext[SchedulerSettings]) -> None:
    world = World(context.cluster, context.settings)
    await world.discover_optional_kinds()
    for cache in world.caches():
        context.watch(cache)
    context.readiness.add("caches", lambda: world.synced)
    meters = Meters(context.registry, world)
    context.loop("metrics", lambda: meters.follow(context.stop))
    engine = Engine(context, world, meters)
    Triggers(context, world, engine).register()
    grace = context.settings.shutdown.grace_seconds

    async def close() -> None:
        await engine.close(grace)

    context.closers.append(close)
