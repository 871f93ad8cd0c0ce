"""The aggregator's work: from an admitted pod to a KeptnAppVersion, idempotently.

Three entry points share one set of steps (``WorkloadIdentity`` → KeptnWorkload →
KeptnWorkloadVersion → KeptnAppCreationRequest → KeptnApp → KeptnAppVersion):

- ``admit``: a ``PodAdmitted`` event from the webhook, or a gated pod found by reconciliation
  whose event never arrived;
- ``complete_creation_request``: a KeptnAppCreationRequest whose discovery window ended;
- ``reconcile_app``: a KeptnApp whose current generation has no confirmed KeptnAppVersion
  (a revision bump, a user's own app, a restart).

Every step reads before it writes and names what it creates deterministically, so running any
step twice (a redelivered event, two replicas, a resync after a crash mid-flow) changes
nothing: a create answered with AlreadyExists means someone else did it, a 409 on an update
means re-read and re-decide (``ClusterClient.update``). Work on one app is serialised in the
process by a per-app lock; across replicas the apiserver's preconditions do it.

The "created" events for the scheduler carry ids derived from the object (uid included) and
are published again, with the same id, whenever a step finds a version the scheduler has not
picked up yet (no status): a crash between the create and the publish costs a delay, never
the version.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from prometheus_client import Counter, Histogram

from klt_app_aggregator import rules
from klt_app_aggregator.rules import Body, WorkloadIdentity
from klt_app_aggregator.settings import SHARD_LABEL, AggregationSettings
from klt_common.aiokits.errors import PermanentError, TemporaryError
from klt_common.aiokits.tasks import TaskPool
from klt_common.aiokits.workqueue import KeyedLocks
from klt_common.clients import cluster as k8s
from klt_common.clients.bus import Publisher
from klt_common.clients.events_recorder import EventRecorder, EventType, keptn_message
from klt_common.structs import discovery as disc
from klt_common.structs import events
from klt_common.structs.api.enums import Phase

_log = logging.getLogger(__name__)

KEPTN_WORKLOADS = k8s.keptn_resource("KeptnWorkload")
KEPTN_WORKLOAD_VERSIONS = k8s.keptn_resource("KeptnWorkloadVersion")
KEPTN_APPS = k8s.keptn_resource("KeptnApp")
KEPTN_APP_VERSIONS = k8s.keptn_resource("KeptnAppVersion")
KEPTN_APP_CONTEXTS = k8s.keptn_resource("KeptnAppContext")
KEPTN_APP_CREATION_REQUESTS = k8s.keptn_resource("KeptnAppCreationRequest")
KEPTN_CONFIGS = k8s.keptn_resource("KeptnConfig")
ROLLOUTS = k8s.Resource("argoproj.io", "v1alpha1", "rollouts", "Rollout")

_PARENTS = {
    "Deployment": k8s.DEPLOYMENTS,
    "StatefulSet": k8s.STATEFULSETS,
    "DaemonSet": k8s.DAEMONSETS,
    "Rollout": ROLLOUTS,
}

# Creating or updating the automatic KeptnApp had no phase in Keptn (and no event); these two
# follow the same pattern.
CREATE_APP = "CreateApp"
UPDATE_APP = "UpdateApp"

# Keptn's long phase names, used in event messages.
_LONG: dict[str, str] = {
    CREATE_APP: "Create App",
    UPDATE_APP: "Update App",
    Phase.CREATE_WORKLOAD: "Create Workload",
    Phase.UPDATE_WORKLOAD: "Update Workload",
    Phase.CREATE_WORKLOAD_VERSION: "Create WorkloadVersion",
    Phase.CREATE_APP_CREATION_REQUEST: "Create AppCreationRequest",
    Phase.CREATE_APP_VERSION: "Create AppVersion",
    Phase.DEPRECATE_APP_VERSION: "Deprecate AppVersion",
}

Key = tuple[str, str]


def _namespace_of(obj: Mapping[str, Any]) -> str:
    return str(rules.meta(obj).get("namespace", ""))


def _name_of(obj: Mapping[str, Any]) -> str:
    return str(rules.meta(obj).get("name", ""))


def _now() -> datetime:
    return datetime.now(UTC)


def namespace_is_gone(exc: k8s.ApiError) -> bool:
    """The namespace was deleted (or is being deleted) under us: nothing left to do there."""
    if isinstance(exc, k8s.NotFound) and "namespaces" in exc.message:
        return True
    return exc.status == 403 and "being terminated" in exc.message


class Aggregator:
    """The steps, over one cluster client and one publisher (see the module docstring)."""

    def __init__(
        self,
        *,
        cluster: k8s.ClusterClient,
        publisher: Publisher,
        settings: AggregationSettings,
        source: str,
        tracer: trace.Tracer,
        recorder: EventRecorder,
        workloads: k8s.WatchCache,
        apps: k8s.WatchCache,
        requests: k8s.WatchCache,
        configs: k8s.WatchCache,
        namespaces: k8s.WatchCache,
        metrics: Metrics,
    ) -> None:
        self.cluster = cluster
        self.publisher = publisher
        self.settings = settings
        self.source = source
        self.tracer = tracer
        self.recorder = recorder
        self.workloads = workloads
        self.apps = apps
        self.requests = requests
        self.configs = configs
        self.namespaces = namespaces
        self.metrics = metrics
        self.locks: KeyedLocks[Key] = KeyedLocks()
        self.confirmed: dict[Key, tuple[str, int]] = {}
        """Per app, the (uid, generation) whose KeptnAppVersion is known to exist."""
        self.background = TaskPool("events", limit=64)
        """Event recording runs beside the work it reports, never in its way."""

    async def close(self, grace: float = 5.0) -> None:
        """Let Events still being recorded finish (bounded by ``grace`` seconds)."""
        await self.background.drain(grace)

    # -- scope ----------------------------------------------------------------------------------

    async def admits(self, namespace: str) -> bool:
        """Whether ``namespace`` belongs to this aggregator's shard.

        The namespace cache answers; a namespace it has not seen yet (created a moment ago) is
        read once from the apiserver, so an early admission is neither dropped nor taken by
        the wrong shard. A namespace that no longer exists is nobody's.
        """
        if self.settings.namespace is not None and namespace != self.settings.namespace:
            return False
        ns = self.namespaces.get(namespace)
        if ns is None:
            ns = await self.cluster.get_or_none(k8s.NAMESPACES, namespace)
        if ns is None:
            return False
        labels = rules.meta(ns).get("labels") or {}
        return str(labels.get(SHARD_LABEL, "")) == self.settings.shard

    # -- configuration --------------------------------------------------------------------------

    def window(self) -> float:
        """The discovery window in seconds, from the KeptnConfigs (or the settings default)."""
        return rules.creation_request_timeout(
            self.configs.values(),
            name=self.settings.keptn_config_name,
            default=self.settings.creation_request_timeout_seconds,
        )

    def request_deadline(self, request: Mapping[str, Any]) -> datetime:
        created = rules.parse_time(rules.meta(request).get("creationTimestamp")) or _now()
        app_name = str(rules.spec(request).get("appName") or _name_of(request))
        app = self.apps.get(app_name, _namespace_of(request))
        return rules.creation_deadline(
            created,
            single_service=rules.is_single_service(request),
            user_owned_app=app is not None and not rules.is_managed(app),
            timeout_seconds=self.window(),
        )

    def is_confirmed(self, app: Mapping[str, Any]) -> bool:
        key = (_namespace_of(app), _name_of(app))
        return self.confirmed.get(key) == (str(rules.meta(app).get("uid")), rules.generation(app))

    # -- events ---------------------------------------------------------------------------------

    async def _event(
        self,
        obj: Mapping[str, Any],
        phase: str,
        state: str,
        text: str,
        *,
        version: str = "",
        type_: EventType = "Normal",
    ) -> None:
        long_phase = _LONG.get(phase, phase)
        message = keptn_message(
            long_phase, text, namespace=_namespace_of(obj), name=_name_of(obj), version=version
        )
        await self.background.spawn(
            f"{phase}{state}",
            self.recorder.record(obj, type_=type_, reason=f"{phase}{state}", message=message),
        )

    # -- entry point 1: an admitted pod ----------------------------------------------------------

    async def handle_admission(self, identity: WorkloadIdentity) -> None:
        """``admit`` for the bus handler: apiserver errors become the bus's error taxonomy."""
        try:
            await self.admit(identity)
        except k8s.ApiError as exc:
            if namespace_is_gone(exc):
                _log.info(
                    "namespace %s is gone; dropping %s", identity.namespace, identity.workload
                )
                return
            if isinstance(exc, k8s.Invalid | k8s.Forbidden):
                await self._event(
                    {
                        "apiVersion": identity.owner.api_version,
                        "kind": identity.owner.kind,
                        "metadata": {
                            "name": identity.owner.name,
                            "namespace": identity.namespace,
                            "uid": identity.owner.uid,
                        },
                    },
                    Phase.CREATE_WORKLOAD,
                    "Failed",
                    f"could not create the lifecycle objects of {identity.workload}: {exc}",
                    version=identity.version,
                    type_="Warning",
                )
                raise PermanentError(str(exc)) from exc
            raise TemporaryError(str(exc)) from exc

    async def admit(self, identity: WorkloadIdentity) -> None:
        """Create or update everything one admitted workload implies (idempotent)."""
        async with self.locks.hold((identity.namespace, identity.app)):
            await self._admit(identity)

    async def _admit(self, identity: WorkloadIdentity) -> None:
        with self.tracer.start_as_current_span(
            "aggregate_workload",
            attributes={
                "keptn.deployment.app.name": identity.app,
                "keptn.deployment.app.namespace": identity.namespace,
                "keptn.deployment.workload.name": identity.workload,
                "keptn.deployment.workload.version": identity.version,
            },
        ):
            workload, changed = await self._upsert_workload(identity)
            await self._ensure_workload_version(workload, fresh=changed)
            request = None
            if changed or not self._app_settled(identity):
                request = await self._ensure_creation_request(identity, trust_cache=True)
            # A single-service app need not wait for the request's watch event; any request
            # this misses (a cache that lags) is completed by the reconciler at once anyway.
            pending = request or self.requests.get(identity.app, identity.namespace)
            if identity.single_service and pending is not None:
                await self._complete_creation_request(
                    identity.namespace, identity.app, request=request
                )

    def _app_settled(self, identity: WorkloadIdentity) -> bool:
        """True when a creation request could not change the app for this workload: a user
        owns the app, or it already lists the workload at this version."""
        app = self.apps.get(identity.app, identity.namespace)
        if app is None:
            return False
        return not rules.is_managed(app) or rules.app_covers(app, identity)

    async def _upsert_workload(self, identity: WorkloadIdentity) -> tuple[Body, bool]:
        """The KeptnWorkload, created or brought up to date; and whether it was written."""
        ns, name = identity.namespace, identity.workload
        cached = self.workloads.get(name, ns)
        if cached is not None and not rules.workload_differs(cached, identity):
            return cached, False
        exists = cached is not None
        seen: list[Body] = []

        def mutate(obj: Body) -> Body | None:
            seen.append(obj)
            if not rules.workload_differs(obj, identity):
                return None
            return rules.apply_workload(obj, identity)

        for _ in range(3):
            if not exists:
                try:
                    created = await self.cluster.create(
                        KEPTN_WORKLOADS, rules.workload_body(identity), ns
                    )
                except k8s.AlreadyExists:
                    exists = True
                    continue
                self.metrics.writes.labels("KeptnWorkload", "create").inc()
                await self._event(
                    created, Phase.CREATE_WORKLOAD, "Finished", "created", version=identity.version
                )
                return created, True
            try:
                stored = await self.cluster.update(KEPTN_WORKLOADS, name, ns, mutate)
            except k8s.NotFound:
                exists = False
                continue
            if stored is None:
                return seen[-1], False
            self.metrics.writes.labels("KeptnWorkload", "update").inc()
            await self._event(
                stored, Phase.UPDATE_WORKLOAD, "Finished", "updated", version=identity.version
            )
            return stored, True
        raise TemporaryError(f"KeptnWorkload {ns}/{name} kept appearing and disappearing")

    async def _ensure_workload_version(self, workload: Body, *, fresh: bool = False) -> Body:
        """The workload's current version, created (or its spec brought in line) if need be.
        ``fresh``: the workload was just written, so its version most likely does not exist
        yet and is created without reading first."""
        ns, version = _namespace_of(workload), str(rules.spec(workload)["version"])
        name = rules.workload_version_name(workload)
        kwv = None if fresh else await self.cluster.get_or_none(KEPTN_WORKLOAD_VERSIONS, name, ns)
        created = False
        if kwv is None:
            try:
                kwv = await self.cluster.create(
                    KEPTN_WORKLOAD_VERSIONS, rules.workload_version_body(workload), ns
                )
                created = True
            except k8s.AlreadyExists:
                kwv = await self.cluster.get(KEPTN_WORKLOAD_VERSIONS, name, ns)
                if rules.workload_version_differs(kwv, workload):
                    kwv = await self._copy_workload_spec(kwv, workload)
            except k8s.Invalid as exc:
                await self._event(
                    workload,
                    Phase.CREATE_WORKLOAD_VERSION,
                    "Failed",
                    f"could not create KeptnWorkloadVersion {name}: {exc.message}",
                    version=version,
                    type_="Warning",
                )
                raise
            if created:
                self.metrics.writes.labels("KeptnWorkloadVersion", "create").inc()
                await self._event(
                    kwv, Phase.CREATE_WORKLOAD_VERSION, "Finished", "created", version=version
                )
        elif rules.workload_version_differs(kwv, workload):
            kwv = await self._copy_workload_spec(kwv, workload)
        if rules.status(workload).get("currentVersion") != version:
            await self.cluster.patch_status(
                KEPTN_WORKLOADS, _name_of(workload), {"currentVersion": version}, ns
            )
        if created or not rules.announced(kwv):
            payload = events.WorkloadVersionCreated(
                namespace=ns,
                app=str(rules.spec(workload)["app"]),
                workload=_name_of(workload),
                workload_version_name=name,
                version=version,
            )
            await self.publisher.publish(
                payload,
                source=self.source,
                event_id=rules.event_id(payload.event_type, kwv),
            )
        return kwv

    async def _copy_workload_spec(self, kwv: Body, workload: Body) -> Body:
        """Keptn's rule for an existing version whose workload changed at the same version
        string (new checks, say): the workload's spec is copied into it."""

        def copy_spec(obj: Body) -> Body | None:
            if not rules.workload_version_differs(obj, workload):
                return None
            return rules.apply_workload_spec(obj, workload)

        stored = await self.cluster.update(
            KEPTN_WORKLOAD_VERSIONS, _name_of(kwv), _namespace_of(kwv), copy_spec
        )
        if stored is None:
            return kwv
        self.metrics.writes.labels("KeptnWorkloadVersion", "update").inc()
        return stored

    async def _ensure_creation_request(
        self, identity: WorkloadIdentity, *, trust_cache: bool
    ) -> Body | None:
        """Create the app's creation request unless one exists; the new one, or None."""
        ns, name = identity.namespace, identity.app
        if trust_cache and self.requests.get(name, ns) is not None:
            return None
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        try:
            created = await self.cluster.create(
                KEPTN_APP_CREATION_REQUESTS, rules.creation_request_body(identity, carrier), ns
            )
        except k8s.AlreadyExists:
            return None
        self.metrics.writes.labels("KeptnAppCreationRequest", "create").inc()
        return created

    # -- entry point 2: a discovery window ended -----------------------------------------------

    async def complete_creation_request(self, namespace: str, name: str) -> float | None:
        """Create or update the automatic app of a due KeptnAppCreationRequest, create its app
        version, then delete the request. Returns seconds until the request is due when it is
        not yet, else None."""
        async with self.locks.hold((namespace, name)):
            return await self._complete_creation_request(namespace, name)

    async def _complete_creation_request(
        self, ns: str, name: str, *, request: Body | None = None
    ) -> float | None:
        """See ``complete_creation_request``; ``request`` is the request when the caller has
        just created it (saving a read)."""
        if request is None:
            request = await self.cluster.get_or_none(KEPTN_APP_CREATION_REQUESTS, name, ns)
        if request is None:
            return None
        app_name = str(rules.spec(request).get("appName") or name)
        # The cache decides between create and update only: a create that meets an app is
        # answered with AlreadyExists, and an update re-reads it, ownership included.
        app = self.apps.get(app_name, ns)
        if app is not None and not rules.is_managed(app):
            _log.info("KeptnApp %s/%s belongs to a user; dropping its creation request", ns, name)
            await self._delete_request(request)
            return None
        deadline = rules.creation_deadline(
            rules.parse_time(rules.meta(request).get("creationTimestamp")) or _now(),
            single_service=rules.is_single_service(request),
            user_owned_app=False,
            timeout_seconds=self.window(),
        )
        remaining = (deadline - _now()).total_seconds()
        if remaining > 0:
            return remaining
        # The request carries the trace context of the admission that opened it (as in Keptn).
        parent = propagate.extract(dict(rules.meta(request).get("annotations") or {}))
        with self.tracer.start_as_current_span(
            "complete_app_creation_request",
            context=parent,
            attributes={
                "keptn.deployment.app.name": app_name,
                "keptn.deployment.app.namespace": ns,
            },
        ):
            workloads = await self._workloads_of(ns, app_name)
            if not workloads:
                _log.warning(
                    "KeptnAppCreationRequest %s/%s names no KeptnWorkload; dropping it", ns, name
                )
                await self._delete_request(request)
                return None
            app, written = await self._create_or_update_app(request, app is not None, workloads)
            if app is None:  # a user created the app meanwhile
                await self._delete_request(request)
                return None
            await self._ensure_app_version(app, fresh=written)
            await self._delete_request(request)
            self.metrics.lateness.observe(max(0.0, (_now() - deadline).total_seconds()))
            # An admission that saw this request a moment before the delete did not create one
            # of its own; if its workload is not in the app, open a new window for it.
            after = await self._workloads_of(ns, app_name)
            if rules.uncovered(app, after):
                _log.info("workloads of %s/%s changed while it was created; reopening", ns, name)
                self.metrics.repairs.labels("creation-request-reopened").inc()
                await self._recreate_request(request)
        return None

    async def _workloads_of(self, ns: str, app: str) -> list[Body]:
        # The apiserver cannot select custom resources by spec fields (the CRDs declare no
        # selectableFields), so this lists the namespace's workloads and filters. It reads from
        # the apiserver, not the cache: the app must include a workload upserted just now.
        listed = await self.cluster.list(KEPTN_WORKLOADS, ns)
        return [w for w in listed.items if rules.spec(w).get("app") == app]

    async def _delete_request(self, request: Mapping[str, Any]) -> None:
        """Delete exactly this request: a newer one of the same name (made after another
        replica deleted this one) must survive, so the uid is a precondition."""
        m = rules.meta(request)
        try:
            await self.cluster.request(
                "DELETE",
                KEPTN_APP_CREATION_REQUESTS.path(str(m["namespace"]), str(m["name"])),
                body={
                    "kind": "DeleteOptions",
                    "apiVersion": "v1",
                    "preconditions": {"uid": str(m.get("uid", ""))},
                },
            )
        except (k8s.NotFound, k8s.Conflict):
            return
        self.metrics.writes.labels("KeptnAppCreationRequest", "delete").inc()

    async def _recreate_request(self, request: Mapping[str, Any]) -> None:
        m = rules.meta(request)
        metadata: Body = {"name": str(m["name"]), "namespace": str(m["namespace"])}
        if m.get("annotations"):
            metadata["annotations"] = dict(m["annotations"])
        body = {
            "apiVersion": "lifecycle.keptn.sh/v1",
            "kind": "KeptnAppCreationRequest",
            "metadata": metadata,
            "spec": dict(rules.spec(request)),
        }
        try:
            await self.cluster.create(KEPTN_APP_CREATION_REQUESTS, body, str(m["namespace"]))
        except k8s.AlreadyExists:
            return

    async def _create_or_update_app(
        self, request: Mapping[str, Any], exists: bool, workloads: list[Body]
    ) -> tuple[Body | None, bool]:
        """The automatic app made or brought up to date from ``workloads``, and whether it was
        written (a new generation); None when the app turns out to be a user's."""
        ns = _namespace_of(request)
        name = str(rules.spec(request).get("appName") or _name_of(request))
        seen: list[Body] = []

        def mutate(obj: Body) -> Body | None:
            seen.append(obj)
            if not rules.is_managed(obj) or not rules.app_differs(obj, workloads):
                return None
            return rules.apply_app(obj, workloads)

        for _ in range(3):
            if not exists:
                try:
                    created = await self.cluster.create(
                        KEPTN_APPS, rules.app_body(request, workloads), ns
                    )
                except k8s.AlreadyExists:
                    exists = True
                    continue
                self.metrics.writes.labels("KeptnApp", "create").inc()
                await self._event(
                    created,
                    CREATE_APP,
                    "Finished",
                    f"created from {len(workloads)} workload(s)",
                    version=str(rules.spec(created)["version"]),
                )
                return created, True
            try:
                stored = await self.cluster.update(KEPTN_APPS, name, ns, mutate)
            except k8s.NotFound:
                exists = False
                continue
            if stored is None:
                current = seen[-1]
                return (current if rules.is_managed(current) else None), False
            self.metrics.writes.labels("KeptnApp", "update").inc()
            await self._event(
                stored,
                UPDATE_APP,
                "Finished",
                f"updated to {len(workloads)} workload(s)",
                version=str(rules.spec(stored)["version"]),
            )
            return stored, True
        raise TemporaryError(f"KeptnApp {ns}/{name} kept appearing and disappearing")

    # -- entry point 3: an app generation without a version --------------------------------------

    async def reconcile_app(self, namespace: str, name: str) -> float | None:
        """Make sure the app's current generation has its KeptnAppVersion."""
        cached = self.apps.get(name, namespace)
        if cached is None:
            self.confirmed.pop((namespace, name), None)
            return None
        if self.is_confirmed(cached):
            return None
        async with self.locks.hold((namespace, name)):
            app = await self.cluster.get_or_none(KEPTN_APPS, name, namespace)
            if app is None or self.is_confirmed(app):
                return None
            await self._ensure_app_version(app)
        return None

    async def _ensure_app_version(self, app: Body, *, fresh: bool = False) -> bool:
        """Create the KeptnAppVersion of the app's current generation if it is missing,
        deprecating older generations of the same version first; record it as the app's
        current version; announce it. False when a user's object blocks it (with an Event).

        ``fresh``: the generation was just written by this process, so its version is
        created without reading first (AlreadyExists still means someone else did it).
        """
        ns, app_name = _namespace_of(app), _name_of(app)
        version = str(rules.spec(app)["version"])
        name = rules.app_version_name(app)
        kav = None if fresh else await self.cluster.get_or_none(KEPTN_APP_VERSIONS, name, ns)
        created = False
        if kav is None:
            raw_context = await self.cluster.get_or_none(KEPTN_APP_CONTEXTS, app_name, ns)
            try:
                context = rules.context_spec(raw_context)
            except rules.BadInput as exc:
                # Creating the version without the context would skip the user's checks, so
                # it waits (resync retries) until the context is fixed.
                await self._event(
                    app,
                    Phase.CREATE_APP_VERSION,
                    "Failed",
                    f"{exc}; the KeptnAppVersion is created once it is fixed",
                    version=version,
                    type_="Warning",
                )
                return False
            if rules.generation(app) > 1:
                await self._deprecate_older(app)
            attributes = {
                "keptn.deployment.app.name": app_name,
                "keptn.deployment.app.version": version,
                "keptn.deployment.app.namespace": ns,
            }
            with self.tracer.start_as_current_span(
                "create_app_version", kind=trace.SpanKind.PRODUCER, attributes=attributes
            ):
                trace_id = self._start_app_trace(name, attributes)
                try:
                    kav = await self.cluster.create(
                        KEPTN_APP_VERSIONS,
                        rules.app_version_body(app, context, trace_id=trace_id),
                        ns,
                    )
                    created = True
                except k8s.AlreadyExists:
                    kav = await self.cluster.get(KEPTN_APP_VERSIONS, name, ns)
                except k8s.Invalid as exc:
                    await self._event(
                        app,
                        Phase.CREATE_APP_VERSION,
                        "Failed",
                        f"could not create KeptnAppVersion {name}: {exc.message}",
                        version=version,
                        type_="Warning",
                    )
                    return False
            if created:
                self.metrics.writes.labels("KeptnAppVersion", "create").inc()
                await self._event(
                    kav, Phase.CREATE_APP_VERSION, "Finished", "created", version=version
                )
        if rules.status(app).get("currentVersion") != version:
            await self.cluster.patch_status(KEPTN_APPS, app_name, {"currentVersion": version}, ns)
        if created or not rules.announced(kav):
            spec = rules.spec(app)
            payload = events.AppVersionCreated(
                namespace=ns,
                app=app_name,
                app_version_name=name,
                version=version,
                # A hand-written app may say revision 0; the event counts from 1, as the CRD.
                revision=max(1, int(spec.get("revision") or 1)),
                generation=rules.generation(app),
            )
            await self.publisher.publish(
                payload, source=self.source, event_id=rules.event_id(payload.event_type, kav)
            )
        self.confirmed[(ns, app_name)] = (str(rules.meta(app).get("uid")), rules.generation(app))
        return True

    def _start_app_trace(self, name: str, attributes: Mapping[str, str]) -> dict[str, str]:
        """Start the app version's own trace, as Keptn does when it creates one: a new root
        span named after the version, whose context becomes the version's ``spec.traceId``.
        The scheduler's spans of the version (its root, its phases, its workload versions)
        descend from it, so one trace covers the version across both services."""
        span = self.tracer.start_span(
            name, context=Context(), kind=trace.SpanKind.SERVER, attributes=attributes
        )
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        span.end()
        return carrier

    async def _deprecate_older(self, app: Body) -> None:
        """A revision bump: set every older generation's version of the same version string
        to Deprecated, as Keptn's KeptnApp controller does."""
        names = rules.older_app_version_names(app)
        ns, version = _namespace_of(app), str(rules.spec(app)["version"])
        listed = await self.cluster.list(KEPTN_APP_VERSIONS, ns)
        for old in listed.items:
            old_name = _name_of(old)
            if old_name not in names or rules.is_deprecated(old):
                continue

            def mutate(obj: Body) -> Body | None:
                return None if rules.is_deprecated(obj) else rules.deprecate(obj)

            try:
                stored = await self.cluster.update(
                    KEPTN_APP_VERSIONS, old_name, ns, mutate, subresource="status"
                )
            except k8s.NotFound:
                continue
            except k8s.ApiError as exc:
                await self._event(
                    app,
                    Phase.DEPRECATE_APP_VERSION,
                    "Failed",
                    f"could not deprecate outdated revision {old_name}: {exc.message}",
                    version=version,
                    type_="Warning",
                )
                raise
            if stored is not None:
                self.metrics.writes.labels("KeptnAppVersion", "deprecate").inc()
                await self._event(
                    stored, Phase.DEPRECATE_APP_VERSION, "Finished", "deprecated", version=version
                )

    # -- reconciliation of gated pods -----------------------------------------------------------

    async def reconcile_pod(self, pod: Mapping[str, Any]) -> None:
        """Repair what a lost ``PodAdmitted`` left undone for a gated pod.

        A gated pod without its KeptnWorkloadVersion runs the admission path. One with its
        version but with neither an app nor a creation request (the event's handling stopped
        half-way and was dead-lettered) gets its creation request back.
        """
        ns = _namespace_of(pod)
        try:
            identity = await self._identify(pod)
        except disc.DiscoveryError as exc:
            await self.recorder.record(
                pod,
                type_="Warning",
                reason=f"{Phase.CREATE_WORKLOAD}Failed",
                message=keptn_message(
                    _LONG[Phase.CREATE_WORKLOAD],
                    str(exc),
                    namespace=ns,
                    name=_name_of(pod),
                    version="",
                ),
            )
            return
        if identity is None:
            return
        async with self.locks.hold((ns, identity.app)):
            kwv = await self.cluster.get_or_none(
                KEPTN_WORKLOAD_VERSIONS, identity.workload_version, ns
            )
            if kwv is None:
                if await self._superseded(pod, identity):
                    return
                _log.info(
                    "gated pod %s/%s has no KeptnWorkloadVersion %s; creating it",
                    ns,
                    _name_of(pod),
                    identity.workload_version,
                )
                self.metrics.repairs.labels("workload-version").inc()
                await self._admit(identity)
                return
            if self.apps.get(identity.app, ns) is not None:
                return
            if await self.cluster.get_or_none(KEPTN_APPS, identity.app, ns) is not None:
                return
            if await self.cluster.get_or_none(KEPTN_APP_CREATION_REQUESTS, identity.app, ns):
                return
            _log.info("app %s/%s of a gated pod is missing; requesting it", ns, identity.app)
            self.metrics.repairs.labels("creation-request").inc()
            request = await self._ensure_creation_request(identity, trust_cache=False)
            if identity.single_service:
                await self._complete_creation_request(ns, identity.app, request=request)

    async def _superseded(self, pod: Mapping[str, Any], identity: WorkloadIdentity) -> bool:
        """A pod of an older version whose workload moved on after the pod was created (an old
        ReplicaSet's pod, say): re-admitting it would roll the KeptnWorkload back, so it is
        left alone. Keptn's webhook never saw such a pod late."""
        ns = identity.namespace
        workload = self.workloads.get(identity.workload, ns)
        if workload is None or rules.spec(workload).get("version") == identity.version:
            return False
        current = await self.cluster.get_or_none(
            KEPTN_WORKLOAD_VERSIONS, rules.workload_version_name(workload), ns
        )
        if current is None:
            return False
        created = rules.parse_time(rules.meta(current).get("creationTimestamp"))
        pod_created = rules.parse_time(rules.meta(pod).get("creationTimestamp"))
        return created is not None and pod_created is not None and created > pod_created

    async def _identify(self, pod: Mapping[str, Any]) -> WorkloadIdentity | None:
        ns = _namespace_of(pod)
        pod_meta = rules.meta(pod)
        parent = None
        if not disc.has_workload_key(pod_meta):
            parent = await self._parent_meta(ns, pod_meta)
        found = disc.discover(pod, parent)
        return None if found is None else WorkloadIdentity.from_discovery(ns, found)

    async def _parent_meta(self, ns: str, pod_meta: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """The metadata of the Deployment (via the ReplicaSet), Rollout, StatefulSet or
        DaemonSet whose keys a pod without its own inherits."""
        owner = disc.supported_owner(pod_meta)
        if owner is None:
            return None
        kind, name = str(owner.get("kind")), str(owner.get("name", ""))
        if kind == "ReplicaSet":
            rs = await self.cluster.get_or_none(k8s.REPLICASETS, name, ns)
            rs_owner = disc.supported_owner(rules.meta(rs or {}))
            if rs_owner is None:
                return None
            kind, name = str(rs_owner.get("kind")), str(rs_owner.get("name", ""))
        resource = _PARENTS.get(kind)
        if resource is None:
            return None
        try:
            parent = await self.cluster.get_or_none(resource, name, ns)
        except k8s.NotFound:  # the Rollout kind is not installed
            return None
        return None if parent is None else rules.meta(parent)


class Metrics:
    """The aggregator's Prometheus metrics, on the service's registry."""

    def __init__(self, registry: Any) -> None:
        self.writes = Counter(
            "klt_aggregator_writes",
            "Objects the aggregator created, updated, deprecated or deleted, by kind and verb.",
            ["kind", "verb"],
            registry=registry,
        )
        self.repairs = Counter(
            "klt_aggregator_repairs",
            "Work reconciliation did because an event was lost or a flow stopped half-way.",
            ["what"],
            registry=registry,
        )
        self.failures = Counter(
            "klt_aggregator_reconcile_failures",
            "Reconcile items that failed and were scheduled for a retry, by item kind.",
            ["kind"],
            registry=registry,
        )
        self.lateness = Histogram(
            "klt_aggregator_creation_request_lateness_seconds",
            "How long after its deadline a KeptnAppCreationRequest was completed.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=registry,
        )
