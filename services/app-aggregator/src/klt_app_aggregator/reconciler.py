"""Reconciliation from the cluster: watch caches feed one keyed delay queue.

Four kinds of work items, each keyed by ``(kind, namespace, name)``:

``request``
    A KeptnAppCreationRequest. Due at ``creationTimestamp + window`` (at once for a
    single-service app or a user's app). The deadline is computed from the object whenever the
    request or a KeptnConfig changes, and again by the handler itself, which hands back the
    remaining time when it is woken early. A restarted aggregator lists the requests and
    schedules each from its creationTimestamp, so a window that began before the restart ends
    on time, not a full window after it.
``app``
    A KeptnApp whose current generation has no confirmed KeptnAppVersion: a revision bump, a
    user's own app, anything after a restart (checked once, then remembered).
``pod``
    A pod carrying the ``keptn-prechecks-gate``, checked once it is older than the grace period
    for its KeptnWorkloadVersion. Pods come from a watch of *unscheduled pending* pods
    (``spec.nodeName=``, ``status.phase=Pending``): a gated pod is always in that set, the set is
    small in a healthy cluster, and the apiserver filters it, so the aggregator never holds
    every pod of the cluster. The gate itself is checked client-side (no selector exists for
    it).
``ungated``
    A pod of a supported owner in a namespace that opted in (``keptn.sh/lifecycle-toolkit:
    enabled``) that carries neither the gate nor the mark of its removal: the webhook never saw
    it (it was down, and its ``failurePolicy`` is ``Ignore``). The pod already runs, but its
    workload is discovered as the webhook would have done it, from the pod and its owners, and
    its lifecycle (checks, app version, trace) follows. Such pods are seen while they are still
    in the pending set, and by the resync's one pod list per opted-in namespace, which looks
    at one pod per owner that no KeptnWorkload references yet.

A periodic resync re-adds every request and gated pod and every unconfirmed app; items that
need nothing cost a cache lookup (apps), or one read (pods), so the resync only finds what the
event path missed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from klt_app_aggregator import rules
from klt_app_aggregator.aggregator import Aggregator
from klt_app_aggregator.settings import AggregationSettings
from klt_common.aiokits.retry import sleep_or_stop
from klt_common.aiokits.workqueue import KeyedWorkQueue
from klt_common.clients import cluster as k8s
from klt_common.structs import discovery as disc

_log = logging.getLogger(__name__)

UNSCHEDULED_PENDING = "spec.nodeName=,status.phase=Pending"
"""The field selector of the pod watch (see the module docstring)."""

REQUEST, APP, POD, UNGATED = "request", "app", "pod", "ungated"

Item = tuple[str, str, str]


def is_gated(pod: Mapping[str, Any]) -> bool:
    gates = rules.spec(pod).get("schedulingGates") or []
    return any(isinstance(g, Mapping) and g.get("name") == disc.SCHEDULING_GATE for g in gates)


def missed_by_webhook(pod: Mapping[str, Any]) -> bool:
    """A pod of a supported owner with neither klt's gate nor the mark of its removal."""
    if is_gated(pod) or disc.GATE_REMOVED in (rules.meta(pod).get("annotations") or {}):
        return False
    return disc.supported_owner(rules.meta(pod)) is not None


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    m = rules.meta(obj)
    return str(m.get("namespace", "")), str(m.get("name", ""))


class Reconciler:
    """Turns cache contents and changes into queued items, and handles them."""

    def __init__(
        self,
        aggregator: Aggregator,
        *,
        pods: k8s.WatchCache,
        settings: AggregationSettings,
        drain_seconds: float,
    ) -> None:
        self.aggregator = aggregator
        self.pods = pods
        self.settings = settings
        self.queue: KeyedWorkQueue[Item] = KeyedWorkQueue(
            self.handle,
            workers=settings.workers,
            retry_delays=settings.retry_delays,
            name="reconcile",
            drain_seconds=drain_seconds,
            on_failure=lambda item, _exc: aggregator.metrics.failures.labels(item[0]).inc(),
        )
        # Subscribed before the caches run, so no change after their first list is missed.
        self.subscriptions: list[tuple[str, asyncio.Queue[k8s.WatchEvent], Callable[..., None]]] = [
            ("keptnappcreationrequests", aggregator.requests.subscribe(), self.on_request),
            ("keptnapps", aggregator.apps.subscribe(), self.on_app),
            ("keptnconfigs", aggregator.configs.subscribe(), self.on_config),
            ("pods", pods.subscribe(), self.on_pod),
        ]

    @property
    def caches(self) -> list[k8s.WatchCache]:
        a = self.aggregator
        return [a.workloads, a.apps, a.requests, a.configs, a.namespaces, self.pods]

    # -- delays ---------------------------------------------------------------------------------

    def request_delay(self, request: Mapping[str, Any]) -> float:
        remaining = (self.aggregator.request_deadline(request) - datetime.now(UTC)).total_seconds()
        return max(0.0, remaining)

    def pod_delay(self, pod: Mapping[str, Any]) -> float:
        created = rules.parse_time(rules.meta(pod).get("creationTimestamp"))
        if created is None:
            return self.settings.gated_pod_grace_seconds
        age = (datetime.now(UTC) - created).total_seconds()
        return max(0.0, self.settings.gated_pod_grace_seconds - age)

    # -- cache changes → queue ------------------------------------------------------------------

    def on_request(self, event: k8s.WatchEvent) -> None:
        if event.type != "DELETED":
            self.queue.add((REQUEST, *_key(event.object)), self.request_delay(event.object))

    def on_app(self, event: k8s.WatchEvent) -> None:
        ns, name = _key(event.object)
        if event.type == "DELETED":
            self.aggregator.confirmed.pop((ns, name), None)
            return
        if not self.aggregator.is_confirmed(event.object):
            self.queue.add((APP, ns, name))
        # A request waiting for a window ends at once when the app turns out to be a user's.
        if not rules.is_managed(event.object) and self.aggregator.requests.get(name, ns):
            self.queue.add((REQUEST, ns, name))

    def on_config(self, _event: k8s.WatchEvent) -> None:
        # The window changed: every pending deadline moves (an earlier one takes effect now; a
        # later one when the handler, woken at the old deadline, recomputes it).
        for request in self.aggregator.requests.values():
            self.queue.add((REQUEST, *_key(request)), self.request_delay(request))

    def on_pod(self, event: k8s.WatchEvent) -> None:
        if event.type == "DELETED":
            return
        if is_gated(event.object):
            self.queue.add((POD, *_key(event.object)), self.pod_delay(event.object))
        elif self.needs_discovery(event.object):
            self.queue.add((UNGATED, *_key(event.object)))

    def opted_in(self, namespace: str) -> bool:
        ns = self.aggregator.namespaces.get(namespace)
        annotations = rules.meta(ns or {}).get("annotations") or {}
        return annotations.get(disc.NAMESPACE_ENABLED) == "enabled"

    def needs_discovery(self, pod: Mapping[str, Any]) -> bool:
        """An ungated pod the webhook missed, in an opted-in namespace, of an owner that no
        KeptnWorkload references yet."""
        if not missed_by_webhook(pod) or not self.opted_in(str(rules.meta(pod).get("namespace"))):
            return False
        owner = disc.supported_owner(rules.meta(pod)) or {}
        uid = str(owner.get("uid", ""))
        return uid not in self.known_owners()

    def known_owners(self) -> set[str]:
        return {
            str((rules.spec(w).get("resourceReference") or {}).get("uid", ""))
            for w in self.aggregator.workloads.values()
        }

    def resync(self) -> None:
        """Queue everything the caches say may need work (the queue drops duplicates)."""
        for request in self.aggregator.requests.values():
            self.queue.add((REQUEST, *_key(request)), self.request_delay(request))
        live: set[tuple[str, str]] = set()
        for app in self.aggregator.apps.values():
            live.add(_key(app))
            if not self.aggregator.is_confirmed(app):
                self.queue.add((APP, *_key(app)))
        for gone in set(self.aggregator.confirmed) - live:
            self.aggregator.confirmed.pop(gone, None)
        for pod in self.pods.values():
            if is_gated(pod):
                self.queue.add((POD, *_key(pod)), self.pod_delay(pod))

    async def resync_ungated(self) -> None:
        """Queue one ungated pod per unknown owner in each opted-in namespace of this shard."""
        scope = self.settings.namespace
        for ns in self.aggregator.namespaces.values():
            name = str(rules.meta(ns).get("name", ""))
            if (scope is not None and name != scope) or not self.opted_in(name):
                continue
            if not await self.aggregator.admits(name):
                continue
            known = self.known_owners()
            seen: set[str] = set()
            for pod in (await self.aggregator.cluster.list(k8s.PODS, name)).items:
                owner = disc.supported_owner(rules.meta(pod)) or {}
                uid = str(owner.get("uid", ""))
                if uid in known or uid in seen or not missed_by_webhook(pod):
                    continue
                seen.add(uid)
                self.queue.add((UNGATED, *_key(pod)))

    # -- handling -------------------------------------------------------------------------------

    async def handle(self, item: Item) -> float | None:
        kind, ns, name = item
        if not await self.aggregator.admits(ns):
            return None
        if kind == REQUEST:
            return await self.aggregator.complete_creation_request(ns, name)
        if kind == APP:
            return await self.aggregator.reconcile_app(ns, name)
        if kind == UNGATED:
            await self.discover_ungated(ns, name)
            return None
        pod = self.pods.get(name, ns)
        if (
            pod is None
            or not is_gated(pod)
            or disc.GATE_REMOVED in (rules.meta(pod).get("annotations") or {})
        ):
            return None
        wait = self.pod_delay(pod)
        if wait > 0:
            return wait
        await self.aggregator.reconcile_pod(pod)
        return None

    async def discover_ungated(self, ns: str, name: str) -> None:
        pod = self.pods.get(name, ns) or await self.aggregator.cluster.get_or_none(
            k8s.PODS, name, ns
        )
        if pod is None or not missed_by_webhook(pod) or not self.opted_in(ns):
            return
        _log.debug("pod %s/%s was admitted without the webhook; discovering its workload", ns, name)
        await self.aggregator.reconcile_pod(pod)

    # -- loops ----------------------------------------------------------------------------------

    async def resync_loop(self, stop: asyncio.Event) -> None:
        """Wait for the caches, queue everything once, then again every resync period."""
        while not all(cache.synced for cache in self.caches):
            if await sleep_or_stop(0.05, stop):
                return
        while True:
            self.resync()
            try:
                await self.resync_ungated()
            except k8s.ApiError as exc:
                _log.warning("could not look for pods the webhook missed: %s", exc)
            if await sleep_or_stop(self.settings.resync_seconds, stop):
                return

    @staticmethod
    async def pump(
        queue: asyncio.Queue[k8s.WatchEvent],
        on_event: Callable[[k8s.WatchEvent], None],
        stop: asyncio.Event,
    ) -> None:
        """Feed one cache's changes to ``on_event`` until ``stop``."""
        while not stop.is_set():
            getter = asyncio.ensure_future(queue.get())
            stopper = asyncio.ensure_future(stop.wait())
            try:
                done, _ = await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopper.cancel()
                if not getter.done():
                    getter.cancel()
                await asyncio.gather(getter, stopper, return_exceptions=True)
            if getter in done and not getter.cancelled():
                try:
                    on_event(getter.result())
                except Exception:  # noqa: BLE001 - a bad object must not stop the pump
                    _log.exception("could not queue a change")
