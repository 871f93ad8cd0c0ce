"""The scheduler's view of the cluster: watch caches, scoped to the namespaces it manages.

Every read on a hot path comes from here, never from the apiserver: which task definitions
exist, what a KeptnTask's status is, whether a ReplicaSet is available, which pods wait behind
the gate. The one exception is the object a reconcile pass writes, which is read fresh (a
read-modify-write with its resourceVersion), because that status is the source of truth.

Scope: ``LifecycleSettings.namespace`` narrows every watch to one namespace, and
``LifecycleSettings.shard`` decides which namespaces count as ours (see ``admits``). Objects
outside the scope are in the caches when the watch is cluster-wide, but nothing acts on them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator, Mapping
from datetime import timedelta
from typing import Any

from klt_common.clients import cluster as k8s
from klt_common.structs import discovery
from klt_common.structs.api import options, parse_duration
from klt_common.structs.api.enums import KeptnState
from klt_scheduler.settings import SHARD_LABEL, SchedulerSettings

_log = logging.getLogger(__name__)

Body = dict[str, Any]

APP_VERSIONS = k8s.keptn_resource("KeptnAppVersion")
WORKLOAD_VERSIONS = k8s.keptn_resource("KeptnWorkloadVersion")
TASKS = k8s.keptn_resource("KeptnTask")
EVALUATIONS = k8s.keptn_resource("KeptnEvaluation")
TASK_DEFINITIONS = k8s.keptn_resource("KeptnTaskDefinition")
EVALUATION_DEFINITIONS = k8s.keptn_resource("KeptnEvaluationDefinition")
CONFIGS = k8s.keptn_resource("KeptnConfig")
APPS = k8s.keptn_resource("KeptnApp")
ROLLOUTS = k8s.Resource("argoproj.io", "v1alpha1", "rollouts", "Rollout")
ROLLOUT_CRD = "rollouts.argoproj.io"

_FINAL = (KeptnState.SUCCEEDED, KeptnState.FAILED, KeptnState.DEPRECATED)


def meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    value = obj.get("metadata")
    return value if isinstance(value, Mapping) else {}


def spec(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    value = obj.get("spec")
    return value if isinstance(value, Mapping) else {}


def status(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    value = obj.get("status")
    return value if isinstance(value, Mapping) else {}


def name_of(obj: Mapping[str, Any]) -> str:
    return str(meta(obj).get("name", ""))


def namespace_of(obj: Mapping[str, Any]) -> str:
    return str(meta(obj).get("namespace", ""))


def uid_of(obj: Mapping[str, Any]) -> str:
    return str(meta(obj).get("uid", ""))


def state_of(value: Any) -> KeptnState:
    """A status string as a state; blank and unknown strings read as Pending."""
    try:
        return KeptnState(value) if value else KeptnState.PENDING
    except ValueError:
        return KeptnState.PENDING


def version_finished(obj: Mapping[str, Any]) -> bool:
    """An app or workload version no pass will change again."""
    st = status(obj)
    state = state_of(st.get("status"))
    if state is KeptnState.SUCCEEDED:
        return bool(st.get("endTime"))
    return state in _FINAL


def owners(obj: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [o for o in meta(obj).get("ownerReferences") or [] if isinstance(o, Mapping)]


def has_gate(pod: Mapping[str, Any]) -> bool:
    gates = spec(pod).get("schedulingGates") or []
    return any(isinstance(g, Mapping) and g.get("name") == discovery.SCHEDULING_GATE for g in gates)


class Config:
    """The effective KeptnConfig (Keptn's defaults when there is none)."""

    def __init__(self, spec: options.KeptnConfigSpec | None = None) -> None:
        self.spec = spec or options.KeptnConfigSpec()

    @property
    def block_deployment(self) -> bool:
        return self.spec.block_deployment

    @property
    def observability_timeout(self) -> timedelta:
        try:
            return parse_duration(self.spec.observability_timeout)
        except ValueError:
            return timedelta(minutes=5)


class World:
    """Watch caches of everything the scheduler reads, and lookups over them."""

    def __init__(self, cluster: k8s.ClusterClient, settings: SchedulerSettings) -> None:
        self.cluster = cluster
        self.settings = settings.scheduler
        self.keptn_namespace = settings.cluster.namespace
        ns = self.settings.namespace

        def cache(
            res: k8s.Resource,
            namespace: str | None = ns,
            field_selector: str | None = None,
        ) -> k8s.WatchCache:
            return k8s.WatchCache(cluster, res, namespace=namespace, field_selector=field_selector)

        self.namespaces = cache(
            k8s.NAMESPACES, None, f"metadata.name={ns}" if ns is not None else None
        )
        self.app_versions = cache(APP_VERSIONS)
        self.workload_versions = cache(WORKLOAD_VERSIONS)
        self.tasks = cache(TASKS)
        self.evaluations = cache(EVALUATIONS)
        self.task_definitions = [cache(TASK_DEFINITIONS)]
        self.evaluation_definitions = [cache(EVALUATION_DEFINITIONS)]
        if ns is not None and ns != self.keptn_namespace:
            # Definitions fall back to the Keptn namespace, which a namespaced scheduler would
            # otherwise not see.
            self.task_definitions.append(cache(TASK_DEFINITIONS, self.keptn_namespace))
            self.evaluation_definitions.append(cache(EVALUATION_DEFINITIONS, self.keptn_namespace))
        self.configs = cache(CONFIGS)
        self.apps = cache(APPS)
        self.replicasets = cache(k8s.REPLICASETS)
        self.statefulsets = cache(k8s.STATEFULSETS)
        self.daemonsets = cache(k8s.DAEMONSETS)
        # Only unscheduled pods can carry a scheduling gate; the field selector keeps every
        # running pod of the cluster out of this cache.
        self.pods = cache(k8s.PODS, field_selector="spec.nodeName=")
        self.rollouts: k8s.WatchCache | None = None

    async def discover_optional_kinds(self) -> None:
        """Watch Argo Rollouts only where their CRD is installed; else read them live."""
        try:
            crd = await self.cluster.get_or_none(k8s.CRDS, ROLLOUT_CRD)
        except k8s.ApiError as exc:
            _log.warning("cannot tell whether Argo Rollouts are installed: %s", exc)
            crd = None
        if crd is not None:
            self.rollouts = k8s.WatchCache(
                self.cluster, ROLLOUTS, namespace=self.settings.namespace
            )

    def caches(self) -> list[k8s.WatchCache]:
        caches = [
            self.namespaces,
            self.app_versions,
            self.workload_versions,
            self.tasks,
            self.evaluations,
            *self.task_definitions,
            *self.evaluation_definitions,
            self.configs,
            self.apps,
            self.replicasets,
            self.statefulsets,
            self.daemonsets,
            self.pods,
        ]
        if self.rollouts is not None:
            caches.append(self.rollouts)
        return caches

    @property
    def synced(self) -> bool:
        return all(c.synced for c in self.caches())

    async def wait_synced(self) -> None:
        await asyncio.gather(*(c.wait_synced() for c in self.caches()))

    # -- scope ---------------------------------------------------------------------------------

    def admits(self, namespace: str) -> bool:
        """Whether objects in ``namespace`` are this scheduler's to manage.

        A namespace the cache has not seen yet is not admitted; its arrival in the cache
        triggers a pass over everything in it, so nothing created meanwhile is missed.
        """
        if self.settings.namespace is not None and namespace != self.settings.namespace:
            return False
        ns = self.namespaces.get(namespace)
        if ns is None:
            return False
        labels = meta(ns).get("labels") or {}
        return str(labels.get(SHARD_LABEL, "")) == self.settings.shard

    def in_scope(self, objects: Iterable[Body]) -> Iterator[Body]:
        for obj in objects:
            if self.admits(namespace_of(obj)):
                yield obj

    # -- configuration -------------------------------------------------------------------------

    def config(self) -> Config:
        """The KeptnConfig written last among the managed namespaces (Keptn: last applied)."""
        best: Body | None = None
        best_rv = -1
        for obj in self.in_scope(self.configs.values()):
            rv_text = str(meta(obj).get("resourceVersion", "0"))
            rv = int(rv_text) if rv_text.isdigit() else 0
            if rv > best_rv:
                best, best_rv = obj, rv
        if best is None:
            return Config()
        try:
            return Config(options.KeptnConfig.model_validate(best).spec)
        except ValueError as exc:
            _log.warning("ignoring invalid KeptnConfig %s: %s", name_of(best), exc)
            return Config()

    # -- lookups ---------------------------------------------------------------------------------

    def _definition(self, caches: list[k8s.WatchCache], name: str, namespace: str) -> Body | None:
        # Keptn looks in the object's namespace first, then in the Keptn namespace.
        for ns in (namespace, self.keptn_namespace):
            for cache in caches:
                if cache.namespace not in (None, ns):
                    continue
                found = cache.get(name, ns)
                if found is not None:
                    return found
        return None

    def task_definition(self, name: str, namespace: str) -> Body | None:
        return self._definition(self.task_definitions, name, namespace)

    def evaluation_definition(self, name: str, namespace: str) -> Body | None:
        return self._definition(self.evaluation_definitions, name, namespace)

    def app_versions_of(self, namespace: str, app: str) -> list[Body]:
        return [
            obj
            for obj in self.app_versions.values()
            if namespace_of(obj) == namespace and spec(obj).get("appName") == app
        ]

    def workload_versions_of(self, namespace: str, app: str) -> list[Body]:
        return [
            obj
            for obj in self.workload_versions.values()
            if namespace_of(obj) == namespace and spec(obj).get("app") == app
        ]

    def workload_versions_for_uid(self, namespace: str, uid: str) -> list[Body]:
        return [
            obj
            for obj in self.workload_versions.values()
            if namespace_of(obj) == namespace
            and (spec(obj).get("resourceReference") or {}).get("uid") == uid
        ]

    def governing_workload_version(
        self, namespace: str, uids: Iterable[str], pod: Mapping[str, Any] | None = None
    ) -> Body | None:
        """The workload version whose checks decide about a pod owned by ``uids``.

        A StatefulSet or DaemonSet keeps its uid across versions, so several workload versions
        may match. The pod's own version key decides when it has one (``keptn.sh/version`` or
        ``app.kubernetes.io/version``); otherwise the newest version that is not Deprecated,
        and between two created in the same second (timestamps have second precision) the one
        still running, which is the one being rolled out.
        """
        wanted = set(uids)
        candidates = [
            obj
            for obj in self.workload_versions.values()
            if namespace_of(obj) == namespace
            and (spec(obj).get("resourceReference") or {}).get("uid") in wanted
            and state_of(status(obj).get("status")) is not KeptnState.DEPRECATED
        ]
        if not candidates:
            return None
        if pod is not None:
            version = discovery.label_or_annotation(
                meta(pod), discovery.VERSION, discovery.K8S_VERSION
            )
            same = [o for o in candidates if spec(o).get("version") == (version or "").lower()]
            if version and same:
                candidates = same
        return max(
            candidates,
            key=lambda o: (
                str(meta(o).get("creationTimestamp", "")),
                not version_finished(o),
                name_of(o),
            ),
        )

    def gated_pods(self, namespace: str, uid: str) -> list[Body]:
        return [
            pod
            for pod in self.pods.values()
            if namespace_of(pod) == namespace
            and has_gate(pod)
            and any(o.get("uid") == uid for o in owners(pod))
        ]

    def workload_object(self, kind: str, name: str, namespace: str) -> Body | None:
        cache = {
            "ReplicaSet": self.replicasets,
            "StatefulSet": self.statefulsets,
            "DaemonSet": self.daemonsets,
        }.get(kind)
        return cache.get(name, namespace) if cache is not None else None

    async def rollout(self, name: str, namespace: str) -> Body | None:
        if self.rollouts is not None:
            return self.rollouts.get(name, namespace)
        try:
            return await self.cluster.get_or_none(ROLLOUTS, name, namespace)
        except k8s.ApiError:
            return None
