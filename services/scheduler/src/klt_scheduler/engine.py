"""Reconcile passes: one app or workload version moved as far as the cluster allows.

A pass is Keptn's ``Reconcile`` of a KeptnAppVersion or KeptnWorkloadVersion, run when an
event says something changed instead of every five seconds:

1. read the object fresh from the apiserver (its status is the source of truth);
2. walk its phases in order (``machine``): skip those that passed, work on the first that has
   not (create its KeptnTasks/KeptnEvaluations, read their states, check the deployed object),
   move on while phases complete, stop at the first that is still running or has failed;
3. write the new status with the resourceVersion that was read. On a conflict (another replica
   wrote first) everything from step 1 is redone on the newer object, so a transition is
   applied once, by whoever wrote it;
4. only then announce what the written status says happened: Kubernetes Events with Keptn's
   reasons, ``PhaseChanged`` on the bus, spans, metrics; release the scheduling gate of a
   workload whose pre-deployment checks passed; arm the deploy-timeout timer.

What a pass creates is named deterministically (``machine.check_name``), so a pass that is
redone, or run by a second replica, or after a restart, finds the KeptnTask it created before
instead of starting another one. A KeptnTask is announced (``TaskRequested``) only by the pass
whose create call actually created it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from klt_common.aiokits.errors import TemporaryError
from klt_common.clients import cluster as k8s
from klt_common.clients.events_recorder import EventRecorder, keptn_message
from klt_common.observability.tracing import TRACE_ANNOTATION, in_trace
from klt_common.service import ServiceContext
from klt_common.structs import discovery, events
from klt_common.structs.api import lifecycle
from klt_common.structs.api.enums import KeptnState, Phase
from klt_scheduler import machine, tracing
from klt_scheduler.machine import Kind, PhaseSpec
from klt_scheduler.metrics import Meters
from klt_scheduler.settings import SchedulerSettings
from klt_scheduler.workqueue import NO_HINTS, Hints, Key, Runner
from klt_scheduler.world import (
    APP_VERSIONS,
    EVALUATIONS,
    TASKS,
    WORKLOAD_VERSIONS,
    Body,
    Config,
    World,
    meta,
    name_of,
    namespace_of,
    owners,
    spec,
    state_of,
    status,
    uid_of,
    version_finished,
)

_log = logging.getLogger(__name__)

KAV = "KeptnAppVersion"
KWV = "KeptnWorkloadVersion"

EventType = Literal["Normal", "Warning"]
AppModel = lifecycle.KeptnAppVersion
WorkloadModel = lifecycle.KeptnWorkloadVersion


_RECORDED_LIMIT = 10_000
"""Events remembered as recorded (a bounded LRU), so a repeated fact costs no request."""

_EVENT_CONCURRENCY = 4
"""Event creations in flight at once."""


class PhaseError(Exception):
    """A phase cannot be evaluated right now (Keptn's ``<Phase>ReconcileError``)."""


def _now() -> datetime:
    return datetime.now(UTC)


def _dump(model: Any) -> Body:
    dumped: Body = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    return dumped


# --------------------------------------------------------------------------------------------
# The object a pass works on


@dataclass
class Target:
    """One app or workload version, as read at the start of a pass."""

    kind: str
    obj: Body
    model: AppModel | WorkloadModel

    @property
    def namespace(self) -> str:
        return namespace_of(self.obj)

    @property
    def name(self) -> str:
        return name_of(self.obj)

    @property
    def uid(self) -> str:
        return uid_of(self.obj)

    @property
    def is_app(self) -> bool:
        return self.kind == KAV

    @property
    def app(self) -> str:
        m = self.model
        return m.spec.app_name if isinstance(m, AppModel) else m.spec.app

    @property
    def workload(self) -> str | None:
        m = self.model
        return None if isinstance(m, AppModel) else m.spec.workload_name

    @property
    def version(self) -> str:
        return self.model.spec.version

    @property
    def completed_phase(self) -> Phase:
        return Phase.APP_COMPLETED if self.is_app else Phase.WORKLOAD_COMPLETED

    def span_name(self, key: str) -> str:
        if key == tracing.ROOT:
            return self.name
        return key if self.is_app else f"{self.workload}/{key}"

    def attributes(self) -> dict[str, str]:
        m = self.model
        if isinstance(m, AppModel):
            attrs = {
                "keptn.deployment.app.name": m.spec.app_name,
                "keptn.deployment.app.version": m.spec.version,
                "keptn.deployment.app.namespace": self.namespace,
            }
            # Keptn adds the app context's metadata to the app version's spans.
            return {**(m.spec.metadata or {}), **attrs}
        # The app's metadata with the workload's over it, as in KEPTN_CONTEXT.
        attrs = machine.merge_metadata(
            m.status.app_context_metadata if m.status is not None else None, m.spec.metadata
        )
        attrs.update(
            {
                "keptn.deployment.app.name": m.spec.app,
                "keptn.deployment.workload.name": m.spec.workload_name,
                "keptn.deployment.workload.version": m.spec.version,
                "keptn.deployment.workload.namespace": self.namespace,
            }
        )
        return attrs

    def event_annotations(self) -> dict[str, str]:
        m = self.model
        if isinstance(m, AppModel):
            return {
                "appName": m.spec.app_name,
                "appVersion": m.spec.version,
                "appVersionName": self.name,
            }
        return {
            "appName": m.spec.app,
            "workloadName": m.spec.workload_name,
            "workloadVersion": m.spec.version,
            "workloadVersionName": self.name,
        }

    def owner_reference(self) -> Body:
        return {
            "apiVersion": lifecycle.API_VERSION,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def _phase_ids(st: machine.Status) -> dict[str, dict[str, str]]:
    if st.phase_trace_ids is None:
        st.phase_trace_ids = {}
    return st.phase_trace_ids


# --------------------------------------------------------------------------------------------
# What a pass decided


@dataclass
class Pass:
    """The decisions of one attempt of one pass, applied after its status write."""

    target: Target
    hints: Hints
    now: datetime = field(default_factory=_now)
    events: list[tuple[Mapping[str, Any], EventType, str, str, str, dict[str, str]]] = field(
        default_factory=list
    )
    spans: list[tracing.SpanRecord] = field(default_factory=list)
    changes: list[tuple[str, KeptnState]] = field(default_factory=list)
    finished: bool = False
    promoted: bool = False
    release_gates: bool = False
    releasing: asyncio.Task[None] | None = None
    """Gate release started while the status write is in flight (see ``Engine._write``)."""
    deadline: datetime | None = None

    def event(
        self,
        type_: EventType,
        phase: str,
        state: str,
        text: str,
        *,
        involved: Mapping[str, Any] | None = None,
        annotations: Mapping[str, str] | None = None,
    ) -> None:
        """A Kubernetes Event in Keptn's form: reason ``<phase><state>``, Keptn's message."""
        target = self.target
        about = involved if involved is not None else target.obj
        message = keptn_message(
            machine.long_name(phase),
            text,
            namespace=namespace_of(about),
            name=name_of(about),
            version=target.version,
        )
        notes = {
            "namespace": namespace_of(about),
            "name": name_of(about),
            "phase": phase,
            "traceparent": str((meta(target.obj).get("annotations") or {}).get("traceparent", "")),
            **(annotations if annotations is not None else target.event_annotations()),
        }
        self.events.append((about, type_, phase + state, message, target.kind, notes))

    def span(
        self,
        st: machine.Status,
        key: str,
        *,
        ok: bool,
        event: str,
        extra: Mapping[str, str] | None = None,
    ) -> None:
        """Close the span recorded under ``key`` (the root or a phase)."""
        carrier = (st.phase_trace_ids or {}).get(key)
        if carrier is None:
            return
        attributes: dict[str, str] = dict(self.target.attributes())
        attributes.update(extra or {})
        links: Sequence[str] = ()
        if key == tracing.ROOT and isinstance(self.target.model, AppModel):
            links = self.target.model.spec.span_links or ()
        self.spans.append(
            tracing.SpanRecord(
                name=self.target.span_name(key),
                carrier=carrier,
                parent=carrier.get(tracing.PARENT_KEY),
                start=carrier.get(tracing.START_KEY),
                end=self.now,
                ok=ok,
                attributes=attributes,
                events=(event,),
                links=links,
            )
        )


def phase_changes(
    target_is_app: bool, old: machine.Status, new: machine.Status
) -> list[tuple[str, KeptnState]]:
    """The (phase, state) transitions between two statuses, for ``PhaseChanged`` events."""
    specs = (
        machine.app_phases(promotion_enabled=True) if target_is_app else machine.workload_phases()
    )
    out: list[tuple[str, KeptnState]] = []
    for spec_ in specs:
        before, after = machine.phase_state(old, spec_), machine.phase_state(new, spec_)
        entered = new.current_phase == spec_.phase and old.current_phase != spec_.phase
        if before is not after or entered:
            out.append((spec_.phase, after))
    if old.status is not new.status:
        if new.status is KeptnState.SUCCEEDED:
            out.append((Phase.COMPLETED, KeptnState.SUCCEEDED))
        elif new.status is KeptnState.DEPRECATED:
            out.append((Phase.DEPRECATED, KeptnState.DEPRECATED))
    return out


# --------------------------------------------------------------------------------------------
# The engine


class Engine:
    """Runs passes over app and workload versions; see the module docstring."""

    def __init__(
        self, context: ServiceContext[SchedulerSettings], world: World, meters: Meters
    ) -> None:
        self.context = context
        self.cluster = context.cluster
        self.world = world
        self.meters = meters
        self.settings = context.settings.scheduler
        self.spans = tracing.SpanExporter(context.tracer)
        enabled = self.settings.record_events
        instance = context.instance
        self.recorders = {
            KAV: EventRecorder(context.cluster, "keptnappversion-controller", instance, enabled),
            KWV: EventRecorder(
                context.cluster, "keptnworkloadversion-controller", instance, enabled
            ),
        }
        self.runner = Runner(
            self.reconcile,
            retry_delays=self.settings.retry_delays,
            limit=self.settings.max_concurrent_reconciles,
        )
        self._background: set[asyncio.Task[Any]] = set()
        self._recorded: OrderedDict[tuple[str, str, str], None] = OrderedDict()
        self._event_slots = asyncio.Semaphore(_EVENT_CONCURRENCY)

    # -- entry points ----------------------------------------------------------------------------

    async def reconcile(self, key: Key, hints: Hints = NO_HINTS) -> None:
        """One pass over ``key``; raises ``TemporaryError`` when it should be retried."""
        kind, namespace, name = key
        await self.world.wait_synced()
        if not self.world.admits(namespace):
            return
        cache = self.world.app_versions if kind == KAV else self.world.workload_versions
        cached = cache.get(name, namespace)
        if cached is not None and version_finished(cached) and not hints.generation:
            return
        res = APP_VERSIONS if kind == KAV else WORKLOAD_VERSIONS
        attempts: list[Pass] = []
        started = time.perf_counter()
        result = "failed"
        try:
            try:
                stored = await self._write(res, key, hints, attempts)
            except k8s.NotFound:
                self.runner.forget(key)
                result = "gone"
                return
            if attempts:
                result = "unchanged" if stored is None else "written"
                await self._apply(attempts[-1], stored)
        finally:
            # Gate releases run beside the status write; reap every one (those of attempts
            # redone after a conflict included), whatever happened to the write.
            pending = [a.releasing for a in attempts if a.releasing is not None]
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
            if len(attempts) > 1:
                self.meters.conflicts.labels(kind).inc(len(attempts) - 1)
            self.meters.passes.labels(kind, result).inc()
            self.meters.pass_seconds.labels(kind).observe(time.perf_counter() - started)

    async def _write(
        self, res: k8s.Resource, key: Key, hints: Hints, attempts: list[Pass]
    ) -> Body | None:
        """The read-modify-write of one pass; ``attempts`` collects each try's decisions."""
        kind, namespace, name = key

        async def mutate(obj: Body) -> Body | None:
            pass_ = Pass(Target(kind, obj, _parse(kind, obj)), hints)
            attempts.append(pass_)
            changed = await self._advance(pass_)
            model = pass_.target.model
            if pass_.release_gates and isinstance(model, WorkloadModel):
                # The checks that open the gate are durable already (the KeptnTask and
                # KeptnEvaluation statuses), so the pods need not wait for this status write:
                # both go out together. Releasing is idempotent, whoever wins the write.
                pass_.releasing = asyncio.create_task(
                    self.release_gates(
                        namespace, model.spec.resource_reference.uid, pass_.target.name
                    ),
                    name=f"release {name}",
                )
            return changed

        try:
            return await self.cluster.update(res, name, namespace, mutate, subresource="status")
        except k8s.Conflict as exc:
            raise TemporaryError(f"{kind} {namespace}/{name} kept changing: {exc}") from exc
        except k8s.ApiError as exc:
            if exc.temporary and not isinstance(exc, k8s.NotFound):
                raise TemporaryError(f"{kind} {namespace}/{name}: {exc}") from exc
            raise

    # -- one pass ----------------------------------------------------------------------------------

    async def _advance(self, p: Pass) -> Body | None:
        t = p.target
        old = _status_of(t.model)
        st = old.model_copy(deep=True)
        config = self.world.config()
        if isinstance(t.model, AppModel):
            assert isinstance(st, lifecycle.KeptnAppVersionStatus)
            await self._advance_app(p, st, config)
        else:
            assert isinstance(st, lifecycle.KeptnWorkloadVersionStatus)
            await self._advance_workload(p, st, config)
        new_status = _dump(st)
        if new_status == _dump(old) and "status" in t.obj:
            return None
        p.changes = phase_changes(t.is_app, old, st)
        out = dict(t.obj)
        out["status"] = new_status
        return out

    async def _advance_app(
        self, p: Pass, st: lifecycle.KeptnAppVersionStatus, config: Config
    ) -> None:
        t = p.target
        if self._superseded(t, p.hints):
            if st.status is not KeptnState.DEPRECATED:
                self._close_open_spans(p, st, "has been deprecated by a newer revision")
                machine.deprecate_all(st)
            return
        if machine.aborted(st):
            return
        if st.start_time is None:
            st.start_time = p.now
        ids = _phase_ids(st)
        if tracing.ROOT not in ids:
            parent = (t.model.spec.trace_id or {}).get(tracing.TRACEPARENT)
            tracing.open_span(ids, tracing.ROOT, parent=parent, now=p.now)
        phases = machine.app_phases(promotion_enabled=self.settings.promotion_tasks_enabled)
        await self._run_phases(p, st, phases, config)
        if p.finished and st.status is KeptnState.SUCCEEDED:
            p.promoted = (
                self.settings.promotion_tasks_enabled
                and st.promotion_status.is_completed
                and bool(st.promotion_task_status)
            )

    async def _advance_workload(
        self, p: Pass, st: lifecycle.KeptnWorkloadVersionStatus, config: Config
    ) -> None:
        t = p.target
        assert isinstance(t.model, WorkloadModel)
        if machine.aborted(st):
            return
        parent = (t.model.spec.trace_id or {}).get(tracing.TRACEPARENT)
        if not st.current_phase:
            started, parent = self._app_allows_start(p, st, config)
            if not started:
                return  # nothing to write while waiting
        if st.start_time is None:
            # Keptn stamps the first reconcile, moments after creation; the creation time says
            # the same without a status write per pass while the workload waits for its app.
            created = t.model.metadata.creation_timestamp
            st.start_time = created if created is not None else p.now
        ids = _phase_ids(st)
        if tracing.ROOT not in ids:
            tracing.open_span(ids, tracing.ROOT, parent=parent, now=p.now)
        await self._run_phases(p, st, machine.workload_phases(), config)
        p.release_gates = machine.gate_open(st, block_deployment=config.block_deployment)

    async def _run_phases(
        self,
        p: Pass,
        st: machine.Status,
        phases: Sequence[PhaseSpec],
        config: Config,
    ) -> None:
        """Keptn's phase handler over every phase in turn."""
        t = p.target
        ids = _phase_ids(st)
        for phase in phases:
            if machine.phase_passed(
                machine.phase_state(st, phase), phase, block_deployment=config.block_deployment
            ):
                continue
            if st.current_phase != phase.phase:
                p.event("Normal", phase.phase, "Started", "has started")
                st.current_phase = phase.phase
                tracing.open_span(
                    ids, phase.phase, parent=ids[tracing.ROOT][tracing.TRACEPARENT], now=p.now
                )
            elif phase.phase not in ids:
                tracing.open_span(
                    ids, phase.phase, parent=ids[tracing.ROOT][tracing.TRACEPARENT], now=p.now
                )
            try:
                state = await self._phase(p, st, phase, config)
            except PhaseError as exc:
                _log.warning("%s %s/%s: %s", phase.phase, t.namespace, t.name, exc)
                p.event("Warning", phase.phase, "ReconcileError", "could not get reconciled")
                return
            if not state.is_completed:
                st.status = KeptnState.PROGRESSING
                return
            if state is KeptnState.FAILED:
                p.event("Warning", phase.phase, "Failed", "has failed")
                p.span(st, phase.phase, ok=False, event=f"{phase.long_name} has failed")
                machine.deprecate_remaining(st, phase)
                st.end_time = st.end_time or p.now
                p.span(st, tracing.ROOT, ok=False, event=f"{t.name} has failed")
                if t.is_app:
                    p.event("Warning", Phase.APP_COMPLETED, "Failed", "has failed")
                p.finished = True
                return
            p.event("Normal", phase.phase, "Finished", "has finished")
            p.span(st, phase.phase, ok=True, event=f"{phase.long_name} has succeeded")
        if st.end_time is None:
            st.current_phase = Phase.COMPLETED
            st.status = KeptnState.SUCCEEDED
            st.end_time = p.now
            p.event("Normal", t.completed_phase, "Finished", "has finished")
            p.span(st, tracing.ROOT, ok=True, event=f"{t.name} has finished")
            p.finished = True

    async def _phase(
        self, p: Pass, st: machine.Status, phase: PhaseSpec, config: Config
    ) -> KeptnState:
        if phase.kind in (Kind.TASKS, Kind.EVALUATIONS):
            return await self._checks(p, st, phase, config)
        if phase.kind is Kind.WORKLOADS:
            assert isinstance(st, lifecycle.KeptnAppVersionStatus)
            return self._workloads(p, st)
        assert isinstance(st, lifecycle.KeptnWorkloadVersionStatus)
        return await self._deployment(p, st, config)

    # -- revisions ---------------------------------------------------------------------------------

    def _superseded(self, t: Target, hints: Hints) -> bool:
        """Whether a newer generation of the KeptnApp has the same version (a revision bump).

        Keptn's KeptnApp controller deprecates the versions named after generations 1..g-1 of
        the app's version; here the scheduler, the only writer of KeptnAppVersion status, does
        it, learning the generation from ``AppVersionCreated`` or from the KeptnApp itself.
        """
        generation = hints.generation
        app = self.world.apps.get(t.app, t.namespace)
        if app is not None and spec(app).get("version") == t.version:
            generation = max(generation, int(meta(app).get("generation") or 0))
        if generation <= 1:
            return False
        return any(
            discovery.app_version_name(t.app, t.version, g) == t.name
            for g in range(generation - 1, 0, -1)
        )

    def _close_open_spans(self, p: Pass, st: machine.Status, text: str) -> None:
        if st.current_phase and st.current_phase in (st.phase_trace_ids or {}):
            p.span(st, st.current_phase, ok=False, event=text)
        p.span(st, tracing.ROOT, ok=False, event=text)

    # -- the workload version's start gate --------------------------------------------------------

    def _app_allows_start(
        self, p: Pass, st: lifecycle.KeptnWorkloadVersionStatus, config: Config
    ) -> tuple[bool, str | None]:
        """Keptn's ``checkPreEvaluationStatusOfApp``: may this workload version start, and
        which span is its trace parent."""
        t = p.target
        assert isinstance(t.model, WorkloadModel)
        app_version = self._app_version_of(t.model, t.namespace)
        if app_version is None:
            p.event(
                "Warning",
                Phase.APP_PRE_DEPLOY_EVALUATIONS,
                "AppVersionNotFound",
                "has failed since app could not be found",
            )
            return False, None
        kav_status = status(app_version)
        pre_eval = state_of(kav_status.get("preDeploymentEvaluationStatus"))
        if not machine.app_pre_evaluations_passed(
            pre_eval, block_deployment=config.block_deployment
        ):
            if pre_eval is KeptnState.FAILED:
                p.event(
                    "Warning",
                    Phase.APP_PRE_DEPLOY_EVALUATIONS,
                    "Failed",
                    "has failed since app has failed",
                )
            return False, None
        metadata = spec(app_version).get("metadata") or None
        if (st.app_context_metadata or None) != metadata:
            st.app_context_metadata = dict(metadata) if metadata else None
        parent = (t.model.spec.trace_id or {}).get(tracing.TRACEPARENT)
        if not parent:
            app_ids = kav_status.get("phaseTraceIDs") or {}
            app_deploy = app_ids.get(Phase.APP_DEPLOY) or {}
            parent = app_deploy.get(tracing.TRACEPARENT) or (
                spec(app_version).get("traceId") or {}
            ).get(tracing.TRACEPARENT)
        return True, parent

    def _app_version_of(self, kwv: WorkloadModel, namespace: str) -> Body | None:
        """The newest non-deprecated app version listing this workload at this version."""
        best: Body | None = None
        for app_version in self.world.app_versions_of(namespace, kwv.spec.app):
            if state_of(status(app_version).get("status")) is KeptnState.DEPRECATED:
                continue
            app_name = str(spec(app_version).get("appName", ""))
            for ref in spec(app_version).get("workloads") or []:
                if not isinstance(ref, Mapping) or ref.get("version") != kwv.spec.version:
                    continue
                names = {
                    f"{app_name}-{ref.get('name', '')}",
                    discovery.create_resource_name(app_name, str(ref.get("name", ""))),
                }
                if kwv.spec.workload_name in names and (
                    best is None or _created(app_version) > _created(best)
                ):
                    best = app_version
        return best

    # -- AppDeploy -------------------------------------------------------------------------------

    def _workloads(self, p: Pass, st: lifecycle.KeptnAppVersionStatus) -> KeptnState:
        """Keptn's ``reconcileWorkloads``: the app deploys when all its workload versions do."""
        t = p.target
        assert isinstance(t.model, AppModel)
        refs = t.model.spec.workloads or []
        items: list[lifecycle.WorkloadStatus] = []
        for ref in refs:
            name = discovery.create_resource_name(t.app, ref.name, ref.version)
            kwv = self.world.workload_versions.get(name, t.namespace)
            state = KeptnState.PENDING
            if kwv is None:
                p.event(
                    "Warning",
                    Phase.RECONCILE_WORKLOAD,
                    "NotFound",
                    f"could not find KeptnWorkloadVersion for KeptnWorkload: {ref.name} ",
                )
            else:
                state = state_of(status(kwv).get("status"))
            items.append(lifecycle.WorkloadStatus(workload=ref, status=state))
        overall = machine.overall_state((i.status for i in items), len(refs))
        st.workload_status = items or None
        st.workload_overall_status = overall
        return overall

    # -- WorkloadDeploy -------------------------------------------------------------------------

    async def _deployment(
        self, p: Pass, st: lifecycle.KeptnWorkloadVersionStatus, config: Config
    ) -> KeptnState:
        """Keptn's ``reconcileDeployment``: available replicas, within the observability
        timeout counted from the first check."""
        t = p.target
        assert isinstance(t.model, WorkloadModel)
        timeout = config.observability_timeout
        started = st.deployment_start_time
        if started is not None and p.now > started + timeout:
            st.deployment_status = KeptnState.FAILED
            p.event("Warning", Phase.WORKLOAD_DEPLOY, "Finished", "has reached timeout")
            return KeptnState.FAILED
        ref = t.model.spec.resource_reference
        if ref.kind not in machine.READY_KINDS:
            raise PhaseError(f"unsupported resourceReference kind {ref.kind!r}")
        obj = self.world.workload_object(ref.kind, ref.name, t.namespace)
        if obj is None:
            raise PhaseError(f"{ref.kind} {t.namespace}/{ref.name} not found")
        rollout = None
        if ref.kind == "ReplicaSet" and (owner := machine.rollout_owner(obj)) is not None:
            rollout = await self.world.rollout(str(owner.get("name", "")), t.namespace)
        ready = machine.is_ready(ref.kind, obj, rollout)
        if st.deployment_start_time is None:
            st.deployment_start_time = p.now
            st.deployment_status = KeptnState.PROGRESSING
        if ready:
            st.deployment_status = KeptnState.SUCCEEDED
        else:
            p.deadline = st.deployment_start_time + timeout
        return st.deployment_status

    # -- tasks and evaluations -----------------------------------------------------------------

    async def _checks(
        self, p: Pass, st: machine.Status, phase: PhaseSpec, config: Config
    ) -> KeptnState:
        """Keptn's task/evaluation handler: one object per definition, states mirrored."""
        t = p.target
        assert phase.items_field is not None
        assert phase.definitions_field is not None
        definitions = machine.unique(getattr(t.model.spec, phase.definitions_field))
        previous = {item.definition_name: item for item in getattr(st, phase.items_field) or []}
        items: list[lifecycle.ItemStatus] = []
        for definition in definitions:
            item = previous.get(definition)
            if item is not None and machine.frozen(item, phase.kind):
                items.append(item)
                continue
            item = (
                item.model_copy()
                if item is not None
                else lifecycle.ItemStatus(definition_name=definition, status=KeptnState.PENDING)
            )
            current = await self._read_check(phase.kind, t.namespace, item.name, p.hints)
            if current is None:
                created = await self._ensure_check(p, st, phase, definition)
                if created is None:
                    continue  # no definition (yet): the item is skipped, the phase stays Pending
                item.name, current = created
                item.start_time = item.start_time or p.now
                item.status = KeptnState.PENDING
            if current is not None:
                before = item.status
                item.status = _check_state(phase.kind, current)
                if item.status.is_completed:
                    item.end_time = item.end_time or p.now
                    if not before.is_completed:
                        self._check_finished(p, st, phase, item, current)
            items.append(item)
        setattr(st, phase.items_field, items or None)
        state = machine.overall_state((i.status for i in items), len(definitions))
        if phase.blockable:
            state = machine.blocked(state, config.block_deployment)
        setattr(st, phase.state_field, state)
        return state

    async def _read_check(
        self, kind: Kind, namespace: str, name: str | None, hints: Hints
    ) -> Body | None:
        """The KeptnTask/KeptnEvaluation an item names: from the cache, or live when the cache
        has not seen it yet (just created) or an event said it finished and the cache does not
        show that yet. None when it does not exist (deleted: Keptn creates it again)."""
        if not name:
            return None
        tasks = kind is Kind.TASKS
        res = TASKS if tasks else EVALUATIONS
        found = (self.world.tasks if tasks else self.world.evaluations).get(name, namespace)
        if found is not None and (
            name not in hints.fresh or _check_state(kind, found).is_completed
        ):
            return found
        try:
            return await self.cluster.get_or_none(res, name, namespace)
        except k8s.ApiError as exc:
            raise TemporaryError(f"cannot read {res.kind} {namespace}/{name}: {exc}") from exc

    async def _ensure_check(
        self, p: Pass, st: machine.Status, phase: PhaseSpec, definition: str
    ) -> tuple[str, Body | None] | None:
        """Create (or find) the KeptnTask/KeptnEvaluation of ``definition``.

        Returns its name and, when it already existed, the object; None when the definition
        does not exist.
        """
        t = p.target
        assert phase.check_type is not None
        tasks = phase.kind is Kind.TASKS
        res, cache = (TASKS, self.world.tasks) if tasks else (EVALUATIONS, self.world.evaluations)
        name = machine.check_name(phase.check_type, definition, t.uid, phase.phase)
        existing = cache.get(name, t.namespace)
        if existing is not None:
            return name, self._owned(existing, t)
        found = (
            self.world.task_definition(definition, t.namespace)
            if tasks
            else self.world.evaluation_definition(definition, t.namespace)
        )
        technical = Phase.CREATE_TASK if tasks else Phase.CREATE_EVALUATION
        if found is None:
            what = "KeptnTaskDefinition" if tasks else "KeptnEvaluationDefinition"
            p.event("Warning", technical, "NotFound", f"could not find {what} {definition}")
            return None
        body = (
            self._task_body(t, st, phase, name, found)
            if tasks
            else self._evaluation_body(t, st, phase, name, found)
        )
        try:
            created = await self.cluster.create(res, body, t.namespace)
        except k8s.AlreadyExists:
            # Created by an earlier attempt, another replica, or before a restart.
            try:
                again = await self.cluster.get(res, name, t.namespace)
            except k8s.ApiError as exc:
                raise TemporaryError(f"cannot read {res.kind} {name}: {exc}") from exc
            return name, self._owned(again, t)
        except k8s.ApiError as exc:
            if exc.temporary:
                raise TemporaryError(f"cannot create {res.kind} {name}: {exc}") from exc
            _log.error("cannot create %s %s/%s: %s", res.kind, t.namespace, name, exc)
            p.event(
                "Warning",
                technical,
                "Failed",
                "could not create KeptnTask" if tasks else "could not create KeptnEvaluation",
            )
            return None
        traceparent = ((st.phase_trace_ids or {}).get(phase.phase) or {}).get(tracing.TRACEPARENT)
        self._announce_check(t, phase, name, uid_of(created), tasks=tasks, trace=traceparent)
        return name, None

    @staticmethod
    def _owned(obj: Body, t: Target) -> Body:
        if not any(o.get("uid") == t.uid for o in owners(obj)):
            raise PhaseError(
                f"{obj.get('kind')} {name_of(obj)} exists but belongs to another owner"
            )
        return obj

    def _task_body(
        self, t: Target, st: machine.Status, phase: PhaseSpec, name: str, definition: Body
    ) -> Body:
        assert phase.check_type is not None
        model = lifecycle.KeptnTaskDefinition.model_validate(definition)
        ids = st.phase_trace_ids or {}
        traceparent = (ids.get(phase.phase) or {}).get(tracing.TRACEPARENT)
        if isinstance(t.model, AppModel):
            context = {
                "workloadName": "",
                "appName": t.model.spec.app_name,
                "appVersion": t.model.spec.version,
                "workloadVersion": "",
                "taskType": str(phase.check_type),
                "objectType": "App",
            }
            metadata = machine.merge_metadata(t.model.spec.metadata)
        else:
            assert isinstance(st, lifecycle.KeptnWorkloadVersionStatus)
            context = {
                "workloadName": t.model.spec.workload_name,
                "appName": t.model.spec.app,
                "appVersion": "",
                "workloadVersion": t.model.spec.version,
                "taskType": str(phase.check_type),
                "objectType": "Workload",
            }
            metadata = machine.merge_metadata(st.app_context_metadata, t.model.spec.metadata)
        if traceparent:
            metadata[tracing.TRACEPARENT] = traceparent
        task_context: Body = dict(context)
        task_context["metadata"] = metadata
        labels = meta(definition).get("labels")
        annotations = meta(definition).get("annotations")
        object_meta: Body = {
            "name": name,
            "namespace": t.namespace,
            "ownerReferences": [t.owner_reference()],
        }
        if labels:
            object_meta["labels"] = dict(labels)
        if annotations:
            object_meta["annotations"] = dict(annotations)
        return {
            "apiVersion": lifecycle.API_VERSION,
            "kind": "KeptnTask",
            "metadata": object_meta,
            "spec": {
                "taskDefinition": name_of(definition),
                "context": task_context,
                "parameters": {},
                "secureParameters": {},
                "checkType": str(phase.check_type),
                "retries": model.spec.retries,
                "timeout": model.spec.timeout,
            },
        }

    def _evaluation_body(
        self, t: Target, st: machine.Status, phase: PhaseSpec, name: str, definition: Body
    ) -> Body:
        assert phase.check_type is not None
        d = spec(definition)
        body_spec: Body
        if isinstance(t.model, AppModel):
            body_spec = {
                "appName": t.model.spec.app_name,
                "appVersion": t.model.spec.version,
                "workloadVersion": "",
            }
        else:
            body_spec = {
                "appName": t.model.spec.app,
                "workload": t.model.spec.workload_name,
                "workloadVersion": t.model.spec.version,
            }
        body_spec.update(
            {
                "evaluationDefinition": name_of(definition),
                "checkType": str(phase.check_type),
                "retries": d.get("retries", 10),
                "retryInterval": d.get("retryInterval", "5s"),
            }
        )
        object_meta: Body = {
            "name": name,
            "namespace": t.namespace,
            "ownerReferences": [t.owner_reference()],
        }
        # Keptn copies a task definition's labels onto its tasks but nothing onto evaluations;
        # here evaluations get their definition's labels too, so they can be selected the same
        # way (an evaluator shard, a team label).
        labels = meta(definition).get("labels")
        if labels:
            object_meta["labels"] = dict(labels)
        traceparent = ((st.phase_trace_ids or {}).get(phase.phase) or {}).get(tracing.TRACEPARENT)
        if traceparent:
            object_meta["annotations"] = {TRACE_ANNOTATION: traceparent}
        return {
            "apiVersion": lifecycle.API_VERSION,
            "kind": "KeptnEvaluation",
            "metadata": object_meta,
            "spec": body_spec,
        }

    def _announce_check(
        self, t: Target, phase: PhaseSpec, name: str, uid: str, *, tasks: bool, trace: str | None
    ) -> None:
        payload: events.EventPayload
        if tasks:
            payload = events.TaskRequested(
                namespace=t.namespace,
                app=t.app,
                task_name=name,
                workload=t.workload,
                phase=phase.phase,
            )
        else:
            payload = events.EvaluationRequested(
                namespace=t.namespace,
                app=t.app,
                evaluation_name=name,
                workload=t.workload,
                phase=phase.phase,
            )
        # Announced without waiting: the object exists already, and the task-runner and
        # evaluator also watch for new objects, so a lost announcement only costs time.
        self.announce(
            payload, event_id=f"{payload.event_type}/{uid or name}", trace=trace, what=name
        )

    def _check_finished(
        self,
        p: Pass,
        st: machine.Status,
        phase: PhaseSpec,
        item: lifecycle.ItemStatus,
        current: Body,
    ) -> None:
        """Span of a finished task or evaluation; Keptn's event for a failed evaluation."""
        t = p.target
        tasks = phase.kind is Kind.TASKS
        ok = item.status is KeptnState.SUCCEEDED
        prefix = "keptn.deployment.task" if tasks else "keptn.deployment.evaluation"
        attributes = dict(t.attributes())
        attributes.update(
            {
                f"{prefix}.name": str(item.definition_name or ""),
                f"{prefix}.type": str(phase.check_type or ""),
                f"{prefix}.status": str(item.status),
            }
        )
        ids = st.phase_trace_ids or {}
        text = f"{item.name} has finished" if ok else f"{item.name} has failed"
        if not ok and tasks:
            reason = status(current).get("message", "")
            text += f"; task '{item.name}' failed with reason: '{reason}'"
        p.spans.append(
            tracing.SpanRecord(
                name=str(item.name),
                carrier=None,
                parent=(ids.get(phase.phase) or {}).get(tracing.TRACEPARENT),
                start=item.start_time.isoformat() if item.start_time else None,
                end=p.now,
                ok=ok,
                attributes=attributes,
                events=(text,),
            )
        )
        if tasks or ok:
            return
        message = "evaluation failed"
        results = status(current).get("evaluationStatus") or {}
        for metric, result in results.items() if isinstance(results, Mapping) else ():
            if isinstance(result, Mapping) and result.get("status") == KeptnState.FAILED:
                message += (
                    f"\nevaluation of '{metric}' failed with value: '{result.get('value', '')}'"
                    f" and reason: '{result.get('message', '')}'"
                )
        p.event(
            "Warning",
            Phase.RECONCILE_EVALUATION,
            "Failed",
            message,
            involved=current,
            annotations={
                "appName": t.app,
                "appVersion": t.version if t.is_app else "",
                "workloadName": t.workload or "",
                "workloadVersion": "" if t.is_app else t.version,
                "evaluationName": name_of(current),
                "evaluationDefinitionName": str(item.definition_name or ""),
            },
        )

    # -- after the write -------------------------------------------------------------------------

    async def _apply(self, p: Pass, stored: Body | None) -> None:
        t = p.target
        recorder = self.recorders[t.kind]
        for about, type_, reason, message, _kind, notes in p.events:
            # Waiting states repeat their Event on every pass (AppVersionNotFound, NotFound);
            # the recorder would collapse them into one Event anyway, so skip the request.
            seen = (uid_of(about), reason, message)
            if seen in self._recorded:
                self._recorded.move_to_end(seen)
                continue
            self._recorded[seen] = None
            if len(self._recorded) > _RECORDED_LIMIT:
                self._recorded.popitem(last=False)
            self.spawn(self._record(recorder, about, type_, reason, message, notes), reason)
        key: Key = (t.kind, t.namespace, t.name)
        if stored is not None:
            rv = str(meta(stored).get("resourceVersion", ""))
            for phase, state in p.changes:
                payload = events.PhaseChanged(
                    namespace=t.namespace,
                    app=t.app,
                    object_kind=t.kind,
                    object_name=t.name,
                    phase=phase,
                    state=state,
                )
                self.announce(
                    payload,
                    event_id=f"{events.PhaseChanged.event_type}/{t.uid}/{rv}/{phase}/{state}",
                    trace=self._phase_traceparent(stored, phase),
                    what=f"phase.changed {t.name}",
                )
            for record in p.spans:
                try:
                    self.spans.export(record)
                except Exception:  # noqa: BLE001 - telemetry must not break the lifecycle
                    _log.exception("could not export span %s", record.name)
            if p.finished:
                if t.is_app:
                    self.meters.app_finished(stored, promoted=p.promoted)
                else:
                    self.meters.workload_finished(stored)
        if p.deadline is not None and not p.finished:
            loop = asyncio.get_running_loop()
            delay = (p.deadline - _now()).total_seconds()
            # A little after the deadline, so the pass that runs then sees it passed.
            self.runner.at(key, loop.time() + max(0.0, delay) + 0.05)
        else:
            self.runner.forget(key)
        if p.releasing is not None:
            await p.releasing

    async def _record(
        self,
        recorder: EventRecorder,
        about: Mapping[str, Any],
        type_: EventType,
        reason: str,
        message: str,
        notes: dict[str, str],
    ) -> None:
        # Events are for people: a burst of them waits its turn rather than competing with the
        # lifecycle's own requests.
        async with self._event_slots:
            await recorder.record(
                about, type_=type_, reason=reason, message=message, annotations=notes
            )

    # -- the scheduling gate ---------------------------------------------------------------------

    async def release_gates(self, namespace: str, uid: str, workload_version: str) -> None:
        """Ungate the pods owned by ``uid`` for which ``workload_version`` is the one deciding."""
        pods = [
            pod
            for pod in self.world.gated_pods(namespace, uid)
            if name_of(
                self.world.governing_workload_version(
                    namespace, [str(o.get("uid", "")) for o in owners(pod)], pod
                )
                or {}
            )
            in ("", workload_version)
        ]
        if pods:
            await asyncio.gather(*(self.ungate(pod) for pod in pods))

    async def ungate(self, pod: Mapping[str, Any]) -> None:
        """Remove klt's gate (and only it) from one pod and mark the pod as released."""
        patch = {
            "metadata": {"annotations": {discovery.GATE_REMOVED: "true"}},
            "spec": {"schedulingGates": [{"name": discovery.SCHEDULING_GATE, "$patch": "delete"}]},
        }
        try:
            await self.cluster.patch(
                k8s.PODS, name_of(pod), patch, namespace_of(pod), kind="strategic"
            )
        except k8s.NotFound:
            return
        except k8s.ApiError as exc:
            # A 409 on a patch without a precondition means the apiserver lost its own retries
            # to concurrent writers (the kubelet, a controller): trying again shortly succeeds,
            # whereas giving up would leave the pod gated until the next resync.
            if exc.temporary or isinstance(exc, k8s.Conflict):
                raise TemporaryError(f"cannot ungate pod {name_of(pod)}: {exc}") from exc
            _log.error("cannot ungate pod %s/%s: %s", namespace_of(pod), name_of(pod), exc)
            return
        self.meters.gates_released.inc()
        _log.info("released the scheduling gate of pod %s/%s", namespace_of(pod), name_of(pod))

    async def release_pod(self, pod: Mapping[str, Any]) -> None:
        """A gated pod appeared or changed: release it if its workload version's checks
        passed (pods of an already-passed version created later, a scale-up, a restart)."""
        namespace = namespace_of(pod)
        if not self.world.admits(namespace):
            return
        uids = [str(o.get("uid", "")) for o in owners(pod)]
        governing = self.world.governing_workload_version(namespace, uids, pod)
        if governing is None:
            return
        try:
            kwv = WorkloadModel.model_validate(governing)
        except ValueError:
            return
        st = kwv.status or lifecycle.KeptnWorkloadVersionStatus()
        if machine.gate_open(st, block_deployment=self.world.config().block_deployment):
            await self.ungate(pod)

    # -- background work ----------------------------------------------------------------------

    @staticmethod
    def _phase_traceparent(obj: Body, phase: str) -> str | None:
        """The traceparent of ``phase`` of a stored version, else of the version itself."""
        ids = status(obj).get("phaseTraceIDs") or {}
        for key in (phase, ""):
            carrier = ids.get(key) or {}
            if carrier.get(tracing.TRACEPARENT):
                return str(carrier[tracing.TRACEPARENT])
        return None

    def announce(
        self, payload: events.EventPayload, *, event_id: str, trace: str | None, what: str
    ) -> None:
        """Publish ``payload`` in the background, inside the trace of its app version.

        The scheduler's spans are written from the status (so a restart continues them), not
        held open, so no span is current here: the version's stored traceparent is made the
        context the publishing task inherits, and the bus carries it in the record headers.
        """
        # The task spawned inherits the context current at its creation.
        with in_trace(trace):
            self.spawn(
                self.context.publisher.publish(
                    payload, source=self.context.source, event_id=event_id
                ),
                what,
            )

    def spawn(self, coro: Awaitable[Any], what: str) -> None:
        async def guarded() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - announcements must not break the lifecycle
                _log.exception("%s failed", what)

        task = asyncio.create_task(guarded(), name=what)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self, grace: float) -> None:
        await self.runner.close(grace)
        if self._background:
            _, pending = await asyncio.wait(set(self._background), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)


# --------------------------------------------------------------------------------------------
# Helpers


def _parse(kind: str, obj: Body) -> AppModel | WorkloadModel:
    if kind == KAV:
        return AppModel.model_validate(obj)
    return WorkloadModel.model_validate(obj)


def _status_of(model: AppModel | WorkloadModel) -> machine.Status:
    if isinstance(model, AppModel):
        return model.status or lifecycle.KeptnAppVersionStatus()
    return model.status or lifecycle.KeptnWorkloadVersionStatus()


def _check_state(kind: Kind, obj: Mapping[str, Any]) -> KeptnState:
    st = status(obj)
    return state_of(st.get("status") if kind is Kind.TASKS else st.get("overallStatus"))


def _created(obj: Mapping[str, Any]) -> str:
    return str(meta(obj).get("creationTimestamp", ""))
