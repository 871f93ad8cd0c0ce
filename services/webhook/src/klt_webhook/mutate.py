"""The pod admission path: gate annotated pods and announce them on the bus.

Admission sits in front of every pod creation in an opted-in namespace, so it is kept cheap and
safe:

- it reads namespaces, owners and workload versions from watch caches; only on a cache miss
  (an object created a moment before its first pod) does it read from the apiserver, with a
  short timeout, and it never writes to the apiserver;
- it hands the ``PodAdmitted`` event to a bounded in-memory queue and answers at once; a
  background loop publishes. If Kafka is down the admission still answers, and a workload whose
  event was lost is found later by the app-aggregator's reconciliation of gated pods;
- bad input is admitted unchanged (not annotated, unsupported owner, disabled namespace) or
  denied with a message that says what to fix (keys that give no valid name); an unexpected
  error is logged, counted and the pod admitted unchanged with a warning, never a 500.

Only CREATE is mutated: the apiserver lets an UPDATE remove scheduling gates but never add
them, so gating on UPDATE (as Keptn does) could only fail.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from opentelemetry import context as otel_context
from prometheus_client import Counter, Histogram

from klt_common.aiokits.errors import PermanentError, TemporaryError
from klt_common.aiokits.retry import sleep_or_stop
from klt_common.clients import cluster as k8s
from klt_common.service import ServiceContext
from klt_common.structs import discovery as disc
from klt_common.structs import events
from klt_common.structs.api.enums import KeptnState
from klt_webhook.settings import PodAdmissionSettings, WebhookSettings

_log = logging.getLogger(__name__)

KEPTN_WORKLOAD_VERSIONS = k8s.keptn_resource("KeptnWorkloadVersion")
ROLLOUTS = k8s.Resource("argoproj.io", "v1alpha1", "rollouts", "Rollout")
_PASSED = {KeptnState.SUCCEEDED.value, KeptnState.WARNING.value}


@dataclass(frozen=True)
class Verdict:
    """The outcome of one admission, before it is encoded as an AdmissionReview response."""

    result: str
    """gated, admitted (annotated but not gated), ignored, denied or error: a metric label."""
    allowed: bool = True
    patch: list[dict[str, Any]] | None = None
    message: str = ""
    warnings: tuple[str, ...] = ()


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def build_patch(
    pod: dict[str, Any], annotations: dict[str, str], gate: bool
) -> list[dict[str, Any]]:
    """JSON patch adding ``annotations`` and (when ``gate``) the scheduling gate."""
    ops: list[dict[str, Any]] = []
    meta = pod.get("metadata") or {}
    if annotations:
        if not isinstance(meta.get("annotations"), dict) or not meta["annotations"]:
            ops.append({"op": "add", "path": "/metadata/annotations", "value": dict(annotations)})
        else:
            ops.extend(
                {"op": "add", "path": f"/metadata/annotations/{_escape(k)}", "value": v}
                for k, v in annotations.items()
            )
    if gate:
        # Keptn replaces the whole list; other gates a user set are kept here, ours added once.
        existing = (pod.get("spec") or {}).get("schedulingGates")
        gates = [g for g in existing if isinstance(g, dict)] if isinstance(existing, list) else []
        if not any(g.get("name") == disc.SCHEDULING_GATE for g in gates):
            gates.append({"name": disc.SCHEDULING_GATE})
            ops.append({"op": "add", "path": "/spec/schedulingGates", "value": gates})
    return ops


def review_response(uid: str, verdict: Verdict) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": uid, "allowed": verdict.allowed}
    if verdict.patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(verdict.patch).encode()).decode()
    if not verdict.allowed:
        response["status"] = {"code": 400, "reason": "BadRequest", "message": verdict.message}
    if verdict.warnings:
        response["warnings"] = list(verdict.warnings)
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}


class PodMutator:
    """Decides, for each pod CREATE, whether to gate it, and queues its ``PodAdmitted`` event."""

    def __init__(
        self,
        context: ServiceContext[WebhookSettings],
        settings: PodAdmissionSettings,
    ) -> None:
        self._context = context
        self._settings = settings
        cluster = context.cluster
        self.namespaces = k8s.WatchCache(cluster, k8s.NAMESPACES)
        self.replicasets = k8s.WatchCache(cluster, k8s.REPLICASETS)
        self.deployments = k8s.WatchCache(cluster, k8s.DEPLOYMENTS)
        self.statefulsets = k8s.WatchCache(cluster, k8s.STATEFULSETS)
        self.daemonsets = k8s.WatchCache(cluster, k8s.DAEMONSETS)
        self.workload_versions = k8s.WatchCache(cluster, KEPTN_WORKLOAD_VERSIONS)
        self._queue: asyncio.Queue[tuple[events.PodAdmitted, otel_context.Context]] = asyncio.Queue(
            maxsize=settings.event_queue_size
        )
        registry = context.registry
        self._admissions = Counter(
            "klt_webhook_admissions",
            "Pod admissions by outcome (gated, admitted, ignored, denied, error).",
            ["result"],
            registry=registry,
        )
        self._latency = Histogram(
            "klt_webhook_admission_seconds",
            "Time to answer one pod AdmissionReview.",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=registry,
        )
        self._dropped = Counter(
            "klt_webhook_events_dropped",
            "PodAdmitted events dropped because the publish queue was full.",
            registry=registry,
        )
        self._cache_misses = Counter(
            "klt_webhook_cache_miss_reads",
            "Apiserver reads made because an object was not in the watch caches yet.",
            ["kind"],
            registry=registry,
        )

    @classmethod
    def attach(cls, context: ServiceContext[WebhookSettings]) -> PodMutator:
        """Create the mutator and register its caches and publish loop on the service."""
        mutator = cls(context, context.settings.pods)
        for cache in (
            mutator.namespaces,
            mutator.replicasets,
            mutator.deployments,
            mutator.statefulsets,
            mutator.daemonsets,
            mutator.workload_versions,
        ):
            context.watch(cache)
        context.loop("publish-admissions", mutator.publish_loop)
        return mutator

    # -- HTTP ------------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return web.Response(status=400, text="request body is not a JSON AdmissionReview\n")
        if not isinstance(body, dict) or not isinstance(body.get("request"), dict):
            return web.Response(status=400, text="AdmissionReview without a request\n")
        return web.json_response(await self.review(body))

    async def review(self, body: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        request = body["request"]
        uid = request.get("uid")
        uid = uid if isinstance(uid, str) else ""
        try:
            verdict = await self.admit(request)
        except Exception as exc:  # noqa: BLE001 - a bug here must not block every pod
            _log.exception("admission of a pod failed unexpectedly")
            verdict = Verdict(
                "error", warnings=(f"klt could not process this pod and admitted it as is: {exc}",)
            )
        self._admissions.labels(verdict.result).inc()
        self._latency.observe(time.perf_counter() - started)
        return review_response(uid, verdict)

    # -- the decision ----------------------------------------------------------------------------

    async def admit(self, request: dict[str, Any]) -> Verdict:
        kind = request.get("kind")
        if not isinstance(kind, dict) or kind.get("kind") != "Pod":
            return Verdict("ignored")
        if request.get("operation") != "CREATE":
            return Verdict("ignored")
        pod = request.get("object")
        if not isinstance(pod, dict) or not isinstance(pod.setdefault("metadata", {}), dict):
            return Verdict("ignored")
        meta = pod["metadata"]
        namespace = request.get("namespace") or meta.get("namespace")
        if not isinstance(namespace, str) or not namespace:
            return Verdict("ignored")
        if not await self._namespace_enabled(namespace):
            return Verdict("ignored")
        annotations = meta.get("annotations")
        if isinstance(annotations, dict) and disc.GATE_REMOVED in annotations:
            return Verdict("ignored")
        if not isinstance(pod.get("spec"), dict):
            return Verdict("ignored")
        parent = None
        if not disc.has_workload_key(meta):
            parent = await self._parent_meta(namespace, meta)
        try:
            found = disc.discover(pod, parent)
        except disc.DiscoveryError as exc:
            return Verdict("denied", allowed=False, message=str(exc))
        if found is None:
            return Verdict("ignored")
        gate = not (
            self._settings.skip_gate_when_prechecks_passed
            and self._prechecks_passed(namespace, found.workload_version)
        )
        self._enqueue(self._event(namespace, meta, found))
        return Verdict(
            "gated" if gate else "admitted", patch=build_patch(pod, found.annotations, gate)
        )

    def _prechecks_passed(self, namespace: str, workload_version: str) -> bool:
        kwv = self.workload_versions.get(workload_version, namespace)
        status = (kwv or {}).get("status") or {}
        return (
            status.get("preDeploymentStatus") in _PASSED
            and status.get("preDeploymentEvaluationStatus") in _PASSED
        )

    async def _namespace_enabled(self, name: str) -> bool:
        ns = self.namespaces.get(name) or await self._read(k8s.NAMESPACES, name, None)
        annotations = ((ns or {}).get("metadata") or {}).get("annotations") or {}
        return annotations.get(disc.NAMESPACE_ENABLED) == "enabled"

    async def _parent_meta(self, namespace: str, meta: dict[str, Any]) -> dict[str, Any] | None:
        """The metadata of the workload controller whose keys a bare pod inherits."""
        owner = disc.supported_owner(meta)
        if owner is None:
            return None
        kind, name = owner.get("kind"), str(owner.get("name", ""))
        caches = {
            "Deployment": (self.deployments, k8s.DEPLOYMENTS),
            "StatefulSet": (self.statefulsets, k8s.STATEFULSETS),
            "DaemonSet": (self.daemonsets, k8s.DAEMONSETS),
        }
        if kind == "ReplicaSet":
            rs = self.replicasets.get(name, namespace) or await self._read(
                k8s.REPLICASETS, name, namespace
            )
            rs_owner = disc.supported_owner((rs or {}).get("metadata") or {})
            if rs_owner is None:
                return None
            kind, name = rs_owner.get("kind"), str(rs_owner.get("name", ""))
        if kind == "Rollout":
            # Argo Rollouts is optional, so it gets no watch cache; its pods are read through.
            rollout = await self._read(ROLLOUTS, name, namespace)
            return (rollout or {}).get("metadata")
        if kind in caches:
            cache, resource = caches[str(kind)]
            obj = cache.get(name, namespace) or await self._read(resource, name, namespace)
            return (obj or {}).get("metadata")
        return None

    async def _read(
        self, resource: k8s.Resource, name: str, namespace: str | None
    ) -> dict[str, Any] | None:
        self._cache_misses.labels(resource.kind).inc()
        try:
            async with asyncio.timeout(self._settings.cache_miss_read_timeout):
                return await self._context.cluster.get_or_none(resource, name, namespace)
        except (TimeoutError, k8s.ApiError) as exc:
            _log.warning(
                "could not read %s %s/%s for admission: %s", resource.kind, namespace, name, exc
            )
            return None

    # -- the event ---------------------------------------------------------------------------

    @staticmethod
    def _event(namespace: str, meta: dict[str, Any], found: disc.Discovery) -> events.PodAdmitted:
        owner = found.owner
        return events.PodAdmitted(
            namespace=namespace,
            app=found.app,
            pod_name=str(meta.get("name") or ""),
            pod_uid=str(meta.get("uid") or ""),
            owner=events.OwnerRef(
                kind=str(owner.get("kind")),
                name=str(owner.get("name")),
                uid=str(owner.get("uid", "")),
                api_version=str(owner.get("apiVersion", "")),
            ),
            workload=found.workload,
            version=found.version,
            app_type_single_service=found.single_service,
            pre_deployment_tasks=tuple(found.pre_deployment_tasks),
            post_deployment_tasks=tuple(found.post_deployment_tasks),
            pre_deployment_evaluations=tuple(found.pre_deployment_evaluations),
            post_deployment_evaluations=tuple(found.post_deployment_evaluations),
            metadata=found.metadata,
            admitted_at=dt.datetime.now(dt.UTC),
        )

    def _enqueue(self, event: events.PodAdmitted) -> None:
        try:
            self._queue.put_nowait((event, otel_context.get_current()))
        except asyncio.QueueFull:
            self._dropped.inc()

    async def publish_loop(self) -> None:
        """Publish queued events in order; wait out Kafka outages without blocking admission."""
        stop = self._context.stop
        publisher = self._context.publisher
        delays = self._context.settings.bus.handler_retry_delays or (1.0,)
        while not (stop.is_set() and self._queue.empty()):
            getter = asyncio.ensure_future(self._queue.get())
            stopper = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if getter not in done:
                getter.cancel()
                await asyncio.gather(getter, stopper, return_exceptions=True)
                continue
            event, trace_context = getter.result()
            attempt = 0
            while True:
                token = otel_context.attach(trace_context)
                try:
                    await publisher.publish(event, source=self._context.source)
                    break
                except TemporaryError as exc:
                    delay = delays[min(attempt, len(delays) - 1)]
                    attempt += 1
                    _log.warning(
                        "publishing PodAdmitted failed (%s); retrying in %.1fs", exc, delay
                    )
                    if await sleep_or_stop(delay, stop):
                        break
                except PermanentError:
                    _log.exception("PodAdmitted for %s rejected by Kafka; dropped", event.workload)
                    break
                finally:
                    otel_context.detach(token)
