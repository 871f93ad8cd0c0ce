"""What makes a pass run: bus events first, watch events second, the resync last.

Every trigger ends in ``Runner.run`` or ``Runner.kick`` for the app or workload version it
concerns; the pass then reads the cluster and decides. Triggers never decide anything
themselves, so a duplicate or a stray one costs a read and changes nothing.

- **Bus** (``klt.lifecycle``): ``AppVersionCreated`` and ``WorkloadVersionCreated`` start a
  version; ``TaskFinished``/``EvaluationFinished`` move its phase on (the finished object is
  read live if the watch has not shown the new state yet). Handlers wait for their pass, so an
  event's offset is committed only after its effect is in the cluster.
- **Watches**, the second trigger for everything, so that a lost Kafka record is not fatal:
  a new app or workload version; a KeptnTask or KeptnEvaluation that changed (its owner); a
  workload version that changed (its app version, for AppDeploy); an app version that changed
  (its workload versions waiting for the app's pre-deployment evaluations); a ReplicaSet,
  StatefulSet, DaemonSet or Rollout that changed (the workload versions deploying it); a
  definition that appeared (versions in its namespace waiting for it); a KeptnConfig; a
  KeptnApp (older revisions to deprecate); a gated pod (released at once if its workload
  version's checks passed); a namespace entering the scope.
- **Resync**, every ``resync_seconds``: every unfinished version and every gated pod.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from klt_common.aiokits.errors import TemporaryError
from klt_common.clients import bus
from klt_common.clients import cluster as k8s
from klt_common.service import ServiceContext
from klt_common.structs import discovery, events
from klt_scheduler.engine import KAV, KWV, Engine
from klt_scheduler.settings import SchedulerSettings
from klt_scheduler.workqueue import NO_HINTS, Hints, Key
from klt_scheduler.world import (
    EVALUATIONS,
    TASKS,
    Body,
    World,
    has_gate,
    meta,
    name_of,
    namespace_of,
    owners,
    spec,
    status,
    uid_of,
    version_finished,
)

_log = logging.getLogger(__name__)

Handler = Callable[[k8s.WatchEvent], None]


class Triggers:
    """Wires the bus, the watch caches and the resync to the engine."""

    def __init__(self, context: ServiceContext[SchedulerSettings], world: World, engine: Engine):
        self.context = context
        self.world = world
        self.engine = engine
        self.runner = engine.runner
        self._generations: dict[Key, int] = {}
        self._seen: dict[Key, tuple[str, ...]] = {}
        """What dependents care about, per object, as last seen: a trigger fires on a change."""
        w = world
        subscriptions: list[tuple[k8s.WatchCache, Handler]] = [
            (w.namespaces, self._on_namespace),
            (w.app_versions, self._on_app_version),
            (w.workload_versions, self._on_workload_version),
            (w.tasks, self._on_check),
            (w.evaluations, self._on_check),
            *((cache, self._on_definition) for cache in w.task_definitions),
            *((cache, self._on_definition) for cache in w.evaluation_definitions),
            (w.configs, self._on_config),
            (w.apps, self._on_app),
            (w.replicasets, self._on_workload_object),
            (w.statefulsets, self._on_workload_object),
            (w.daemonsets, self._on_workload_object),
            (w.pods, self._on_pod),
        ]
        if w.rollouts is not None:
            subscriptions.append((w.rollouts, self._on_rollout))
        # Subscribe now, before the caches start, so no event after the initial list is lost.
        self._queues = [(cache, cache.subscribe(), handler) for cache, handler in subscriptions]

    # -- registration ---------------------------------------------------------------------------

    def register(self) -> None:
        context = self.context
        for index, (cache, queue, handler) in enumerate(self._queues):
            context.loop(f"triggers:{cache.resource.plural}:{index}", self._drainer(queue, handler))
        context.loop("resync", self._resync_loop)
        consumer = context.consumer(context.settings.scheduler.consumer_group)
        consumer.register(events.AppVersionCreated, self.on_app_version_created)
        consumer.register(events.WorkloadVersionCreated, self.on_workload_version_created)
        consumer.register(events.TaskFinished, self.on_task_finished)
        consumer.register(events.EvaluationFinished, self.on_evaluation_finished)

    def _drainer(
        self, queue: asyncio.Queue[k8s.WatchEvent], handler: Handler
    ) -> Callable[[], Coroutine[Any, Any, None]]:
        return lambda: self._drain(queue, handler)

    async def _drain(self, queue: asyncio.Queue[k8s.WatchEvent], handler: Handler) -> None:
        stop = self.context.stop
        stopped = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                nxt = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({nxt, stopped}, return_when=asyncio.FIRST_COMPLETED)
                if nxt not in done:
                    nxt.cancel()
                    await asyncio.gather(nxt, return_exceptions=True)
                    return
                try:
                    handler(nxt.result())
                except Exception:  # noqa: BLE001 - one bad object must not stop the triggers
                    _log.exception("trigger for a %s event failed", nxt.result().type)
        finally:
            stopped.cancel()
            await asyncio.gather(stopped, return_exceptions=True)

    # -- bus handlers ---------------------------------------------------------------------------

    async def on_app_version_created(
        self, envelope: events.Envelope[events.AppVersionCreated], _where: bus.Coordinates
    ) -> None:
        data = envelope.data
        await self.world.wait_synced()
        if not self.world.admits(data.namespace):
            return
        hints = Hints(generation=data.generation)
        for generation in range(data.generation - 1, 0, -1):
            older = discovery.app_version_name(data.app, data.version, generation)
            cached = self.world.app_versions.get(older, data.namespace)
            if older != data.app_version_name and cached is not None:
                await self._run((KAV, data.namespace, older), hints)
        await self._run((KAV, data.namespace, data.app_version_name))

    async def on_workload_version_created(
        self, envelope: events.Envelope[events.WorkloadVersionCreated], _where: bus.Coordinates
    ) -> None:
        data = envelope.data
        await self.world.wait_synced()
        if self.world.admits(data.namespace):
            await self._run((KWV, data.namespace, data.workload_version_name))

    async def on_task_finished(
        self, envelope: events.Envelope[events.TaskFinished], _where: bus.Coordinates
    ) -> None:
        await self._on_finished(envelope.data.namespace, envelope.data.task_name, tasks=True)

    async def on_evaluation_finished(
        self, envelope: events.Envelope[events.EvaluationFinished], _where: bus.Coordinates
    ) -> None:
        await self._on_finished(envelope.data.namespace, envelope.data.evaluation_name, tasks=False)

    async def _on_finished(self, namespace: str, name: str, *, tasks: bool) -> None:
        await self.world.wait_synced()
        if not self.world.admits(namespace):
            return
        cache, res = (self.world.tasks, TASKS) if tasks else (self.world.evaluations, EVALUATIONS)
        obj = cache.get(name, namespace)
        if obj is None:
            try:
                obj = await self.context.cluster.get_or_none(res, name, namespace)
            except k8s.ApiError as exc:
                raise TemporaryError(f"cannot read {res.kind} {namespace}/{name}: {exc}") from exc
        if obj is None:
            _log.info("%s %s/%s finished but no longer exists", res.kind, namespace, name)
            return
        for key in self._owner_keys(obj):
            await self._run(key, Hints(fresh=frozenset({name})))

    async def _run(self, key: Key, hints: Hints = NO_HINTS) -> None:
        await self.runner.run(key, hints)

    # -- watch handlers ---------------------------------------------------------------------------

    def _kick_versions(self, objects: Iterable[Body], kind: str, hints: Hints = NO_HINTS) -> None:
        for obj in objects:
            if self.world.admits(namespace_of(obj)) and (
                hints.generation or not version_finished(obj)
            ):
                self.runner.kick((kind, namespace_of(obj), name_of(obj)), hints)

    def _self_changed(self, kind: str, event: k8s.WatchEvent) -> bool:
        """A new object, or a spec change; its own status writes do not count."""
        key: Key = (kind, namespace_of(event.object), name_of(event.object))
        if event.type == "DELETED":
            self._generations.pop(key, None)
            self.runner.forget(key)
            return False
        generation = int(meta(event.object).get("generation") or 0)
        changed = self._generations.get(key) != generation
        self._generations[key] = generation
        return changed

    def _changed(self, key: Key, event: k8s.WatchEvent, *facts: str) -> bool:
        """Whether ``facts`` about an object differ from what the last event said."""
        if event.type == "DELETED":
            self._seen.pop(key, None)
            return True
        before = self._seen.get(key)
        self._seen[key] = facts
        return before != facts

    def _on_app_version(self, event: k8s.WatchEvent) -> None:
        obj = event.object
        if self._self_changed(KAV, event):
            self._kick_versions([obj], KAV)
        st = status(obj)
        facts = (str(st.get("preDeploymentEvaluationStatus", "")), str(st.get("status", "")))
        key: Key = ("app-gate", namespace_of(obj), name_of(obj))
        if event.type == "DELETED" or not self._changed(key, event, *facts):
            return
        # Workload versions wait for their app version's pre-deployment evaluations.
        app = str(spec(obj).get("appName", ""))
        waiting = [
            kwv
            for kwv in self.world.workload_versions_of(namespace_of(obj), app)
            if not status(kwv).get("currentPhase")
        ]
        self._kick_versions(waiting, KWV)

    def _on_workload_version(self, event: k8s.WatchEvent) -> None:
        obj = event.object
        if self._self_changed(KWV, event):
            self._kick_versions([obj], KWV)
        key: Key = ("app-deploy", namespace_of(obj), name_of(obj))
        if not self._changed(key, event, str(status(obj).get("status", ""))):
            return
        # The app versions aggregate their workload versions' states in AppDeploy.
        self._kick_versions(
            self.world.app_versions_of(namespace_of(obj), str(spec(obj).get("app", ""))), KAV
        )

    def _on_check(self, event: k8s.WatchEvent) -> None:
        obj = event.object
        st = status(obj)
        state = str(st.get("status") or st.get("overallStatus") or "")
        key: Key = (str(obj.get("kind", "")), namespace_of(obj), name_of(obj))
        if not self._changed(key, event, state):
            return
        if event.type == "ADDED" and state in ("", "Pending"):
            return  # just created by its owner, which recorded it as Pending already
        for kind, namespace, name in self._owner_keys(obj):
            cache = self.world.app_versions if kind == KAV else self.world.workload_versions
            owner = cache.get(name, namespace)
            if owner is not None:
                self._kick_versions([owner], kind)

    @staticmethod
    def _owner_keys(obj: Body) -> list[Key]:
        return [
            (str(o.get("kind")), namespace_of(obj), str(o.get("name", "")))
            for o in owners(obj)
            if o.get("kind") in (KAV, KWV)
        ]

    def _on_definition(self, event: k8s.WatchEvent) -> None:
        if event.type != "ADDED":
            return
        namespace = namespace_of(event.object)
        everywhere = namespace == self.world.keptn_namespace
        for cache, kind in ((self.world.app_versions, KAV), (self.world.workload_versions, KWV)):
            self._kick_versions(
                (o for o in cache.values() if everywhere or namespace_of(o) == namespace), kind
            )

    def _on_config(self, _event: k8s.WatchEvent) -> None:
        self.resync_now()

    def _on_app(self, event: k8s.WatchEvent) -> None:
        if event.type == "DELETED":
            return
        app = event.object
        generation = int(meta(app).get("generation") or 0)
        if generation <= 1:
            return
        version = spec(app).get("version")
        older = [
            kav
            for kav in self.world.app_versions_of(namespace_of(app), name_of(app))
            if spec(kav).get("version") == version
        ]
        self._kick_versions(older, KAV, Hints(generation=generation))

    def _on_workload_object(self, event: k8s.WatchEvent) -> None:
        obj = event.object
        self._kick_deploying(namespace_of(obj), uid_of(obj))

    def _kick_deploying(self, namespace: str, uid: str) -> None:
        """Unfinished workload versions of the object ``uid``, whose readiness may have changed.

        Not only those the cache shows in WorkloadDeploy: the pass entering that phase may
        not have reached the cache yet when the object becomes ready.
        """
        self._kick_versions(self.world.workload_versions_for_uid(namespace, uid), KWV)

    def _on_rollout(self, event: k8s.WatchEvent) -> None:
        rollout = event.object
        for rs in self.world.replicasets.values():
            if namespace_of(rs) == namespace_of(rollout) and any(
                o.get("uid") == uid_of(rollout) for o in owners(rs)
            ):
                self._kick_deploying(namespace_of(rs), uid_of(rs))

    def _on_pod(self, event: k8s.WatchEvent) -> None:
        if event.type != "DELETED" and has_gate(event.object):
            self.engine.spawn(self.engine.release_pod(event.object), "release pod")

    def _on_namespace(self, event: k8s.WatchEvent) -> None:
        if event.type == "DELETED":
            return
        namespace = name_of(event.object)
        for cache, kind in ((self.world.app_versions, KAV), (self.world.workload_versions, KWV)):
            self._kick_versions((o for o in cache.values() if namespace_of(o) == namespace), kind)

    # -- resync -------------------------------------------------------------------------------

    def resync_now(self) -> None:
        """Trigger every unfinished version and every gated pod in scope."""
        self._kick_versions(self.world.app_versions.values(), KAV)
        self._kick_versions(self.world.workload_versions.values(), KWV)
        for pod in self.world.in_scope(self.world.pods.values()):
            if has_gate(pod):
                self.engine.spawn(self.engine.release_pod(pod), "release pod")

    async def _resync_loop(self) -> None:
        stop = self.context.stop
        synced = asyncio.ensure_future(self.world.wait_synced())
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({synced, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (synced, stopped):
                waiter.cancel()
            await asyncio.gather(synced, stopped, return_exceptions=True)
        # Resume whatever a previous incarnation (or a lost event) left half-way.
        period = self.context.settings.scheduler.resync_seconds
        while not stop.is_set():
            if self.world.synced:
                self.resync_now()
            try:
                await asyncio.wait_for(stop.wait(), timeout=period)
            except TimeoutError:
                continue
