"""KeptnEvaluation: check a definition's objectives against KeptnMetric values, with retries.

Two ways in, one runner per evaluation
---------------------------------------
An evaluation starts the moment its ``evaluation.requested`` event arrives (consumer group
``klt-evaluator``, topic ``klt.evaluations``), and also whenever the watch sees a KeptnEvaluation
that is not finished: one a user created by hand, one whose event was lost, or every unfinished
one after a restart. Both paths call ``ensure``, which starts at most one runner task per
evaluation, so a redelivered event or an event racing the watch changes nothing. The event
handler returns as soon as the runner exists: an evaluation may take minutes of retries, and the
partition must not wait for it. Durable progress is the status; a runner that dies with the
process is restarted from it by the watch.

Rounds (Keptn's rules, ``lifecycle-operator/controllers/lifecycle/keptnevaluation``)
-------------------------------------------------------------------------------------
Each round reads the evaluation (the newer of the watch cache's copy and the object its own last
status write returned, so no extra apiserver read) and its definition (in the evaluation's
namespace, else the klt namespace), increments ``status.retryCount`` and evaluates every
objective not yet Succeeded against its KeptnMetric's ``status.value`` (metric in
``keptnMetricRef.namespace``, else the evaluation's namespace, else the klt namespace). Metrics
of this evaluator's shard are read from its watch cache, which is what it writes them through;
others are read live. An objective's item reads ``value 'X' met objective '>1'`` or ``value 'X'
did not meet objective '>1'``, or says why it could not be judged. All objectives met:
Succeeded. Otherwise, after ``spec.retries`` rounds (default 10): Failed; before that:
Progressing, and the next round follows ``retryInterval`` (default 5s) later. Keptn marked the
evaluation Failed one interval after its last round; klt decides right after it.

A missing definition leaves the evaluation Pending, records a Warning Event
(``ReconcileEvaluationNotFound``) saying where it looked, and looks again every
``definition_retry_seconds``, or at once when such a definition appears.

Finishing
---------
The final status is written first, then ``evaluation.finished`` is published with the id
``klt-evaluator/<uid>/<state>`` (so a republish is deduplicated), then the annotation
``evaluator.klt.sh/announced`` records that it was published. An evaluation found finished but
not announced (the process died in between) is announced again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace
from prometheus_client import CollectorRegistry, Counter
from pydantic import ValidationError

from klt_common.clients import bus
from klt_common.clients import cluster as k8s
from klt_common.clients.events_recorder import EventRecorder, keptn_message
from klt_common.observability.tracing import TRACE_ANNOTATION, in_trace
from klt_common.structs import events
from klt_common.structs.api._base import parse_duration
from klt_common.structs.api.enums import KeptnState
from klt_common.structs.api.lifecycle import (
    EvaluationStatusItem,
    KeptnEvaluation,
    KeptnEvaluationDefinition,
    KeptnEvaluationStatus,
    Objective,
)
from klt_evaluator import clock
from klt_evaluator.lookups import EVALUATIONS, METRICS, Lookups
from klt_evaluator.meters import EvaluationMeters
from klt_evaluator.numbers import describe_non_finite, parse_number
from klt_evaluator.settings import EvaluatorSettings
from klt_evaluator.targets import TargetError, parse_target

_log = logging.getLogger(__name__)

ANNOUNCED_ANNOTATION = "evaluator.klt.sh/announced"
"""Set to the final state once ``evaluation.finished`` was published."""

LONG_PHASE = "Reconcile Evaluation"

Key = tuple[str, str]


# -- pure rules ---------------------------------------------------------------------------------


def judge(value: str, target: str) -> EvaluationStatusItem:
    """Compare one metric value with one evaluation target."""
    try:
        parsed = parse_target(target)
    except TargetError as exc:
        return EvaluationStatusItem(value=value, status=KeptnState.FAILED, message=str(exc))
    try:
        number = parse_number(value)
    except ValueError:
        return EvaluationStatusItem(
            value=value, status=KeptnState.FAILED, message=f"value '{value}' is not a number"
        )
    if (special := describe_non_finite(number)) is not None:
        return EvaluationStatusItem(
            value=value,
            status=KeptnState.FAILED,
            message=f"value '{value}' is {special}, not a finite number",
        )
    if parsed.holds(number):
        return EvaluationStatusItem(
            value=value,
            status=KeptnState.SUCCEEDED,
            message=f"value '{value}' met objective '{target}'",
        )
    return EvaluationStatusItem(
        value=value,
        status=KeptnState.FAILED,
        message=f"value '{value}' did not meet objective '{target}'",
    )


@dataclass(frozen=True)
class Round:
    """The result of one round."""

    items: dict[str, EvaluationStatusItem]
    retry_count: int
    state: KeptnState


def conclude(
    previous: KeptnEvaluationStatus, items: dict[str, EvaluationStatusItem], retries: int
) -> Round:
    """Fold a round's items into the evaluation's state (Keptn's rules, module docstring)."""
    retry_count = previous.retry_count + 1
    if all(item.status == KeptnState.SUCCEEDED for item in items.values()):
        state = KeptnState.SUCCEEDED
    elif retry_count >= max(retries, 1):
        state = KeptnState.FAILED
    else:
        state = KeptnState.PROGRESSING
    return Round(items, retry_count, state)


def summary(state: KeptnState, items: Mapping[str, EvaluationStatusItem]) -> str:
    """A one-line message for ``evaluation.finished``."""
    if state == KeptnState.SUCCEEDED:
        return f"all {len(items)} objectives met"
    failed = [
        f"{name}: {item.message}" for name, item in items.items() if item.status != "Succeeded"
    ]
    return "retryCount exceeded; " + "; ".join(failed)


def finished_event_id(uid: str, state: KeptnState) -> str:
    return f"klt-evaluator/{uid}/{state.value}"


# -- the runner ---------------------------------------------------------------------------------


@dataclass
class Evaluations:
    """Drives every KeptnEvaluation of this shard to a verdict."""

    settings: EvaluatorSettings
    cluster: k8s.ClusterClient
    cache: k8s.WatchCache
    metrics: k8s.WatchCache
    """This shard's KeptnMetrics: read from here when present, else live (another shard's)."""
    lookups: Lookups
    publisher: bus.Publisher
    recorder: EventRecorder
    source: str
    registry: CollectorRegistry
    tracer: trace.Tracer
    stop: asyncio.Event
    _runners: dict[Key, asyncio.Task[None]] = field(default_factory=dict)
    _wakes: dict[Key, asyncio.Event] = field(default_factory=dict)
    _awaiting_definition: set[Key] = field(default_factory=set)
    _definition_names: dict[Key, str] = field(default_factory=dict)
    _written: dict[Key, k8s.Body] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._events = self.cache.subscribe()
        self._definition_events = self.lookups.evaluation_definitions.subscribe()
        self._verdicts = Counter(
            "klt_evaluator_evaluations",
            "KeptnEvaluations finished, by final state",
            ["state"],
            registry=self.registry,
        )
        self._rounds = Counter(
            "klt_evaluator_evaluation_rounds", "KeptnEvaluation rounds run", registry=self.registry
        )
        self._meters = EvaluationMeters(self.registry)

    # -- entry points -------------------------------------------------------------------------

    async def on_requested(
        self, envelope: events.Envelope[events.EvaluationRequested], _where: bus.Coordinates
    ) -> None:
        """``evaluation.requested``: start the evaluation now (idempotent)."""
        data = envelope.data
        body = await self.cluster.get_or_none(EVALUATIONS, data.evaluation_name, data.namespace)
        if body is None:
            _log.info(
                "evaluation.requested for %s/%s, which does not exist (deleted?); skipped",
                data.namespace,
                data.evaluation_name,
            )
            return
        if self.settings.owns((body.get("metadata") or {}).get("labels")):
            _log.debug("evaluation.requested: starting %s/%s", data.namespace, data.evaluation_name)
            self.ensure((data.namespace, data.evaluation_name))

    def ensure(self, key: Key) -> None:
        """Start the runner of ``key`` unless it is running (then its schedule stands)."""
        if self.stop.is_set():
            return
        task = self._runners.get(key)
        if task is not None and not task.done():
            return
        self._wakes[key] = asyncio.Event()
        self._runners[key] = asyncio.create_task(self._drive(key), name=f"evaluation:{key[1]}")

    async def run(self, stop: asyncio.Event) -> None:
        """Start runners for unfinished evaluations; follow the watches until ``stop``."""
        await clock.wait_or_stop(self.cache.wait_synced(), stop)
        if not stop.is_set():
            for body in self.cache.values():
                self._meters.on_evaluation("ADDED", body)
                self._consider(body)
        followers = [
            asyncio.create_task(self._follow(), name="evaluations:follow"),
            asyncio.create_task(self._follow_definitions(), name="evaluations:definitions"),
        ]
        try:
            await stop.wait()
        finally:
            await clock.stop_runners(
                followers,
                self._wakes.values(),
                self._runners.values(),
                self.settings.shutdown.grace_seconds / 2,
            )

    def _consider(self, body: k8s.Body) -> None:
        meta = body.get("metadata") or {}
        state = (body.get("status") or {}).get("overallStatus") or "Pending"
        announced = (meta.get("annotations") or {}).get(ANNOUNCED_ANNOTATION)
        if state in ("Succeeded", "Failed") and announced == state:
            return
        self.ensure(k8s.WatchCache.key_of(body))

    async def _follow(self) -> None:
        while True:
            event = await self._events.get()
            self._meters.on_evaluation(event.type, event.object)
            if event.type in ("ADDED", "MODIFIED"):
                self._consider(event.object)

    async def _follow_definitions(self) -> None:
        while True:
            event = await self._definition_events.get()
            if event.type == "DELETED":
                continue
            name = (event.object.get("metadata") or {}).get("name")
            for key in list(self._awaiting_definition):
                if key in self._wakes and self._definition_names.get(key) == name:
                    self._wakes[key].set()

    # -- one evaluation -----------------------------------------------------------------------

    async def _pause(self, key: Key, seconds: float) -> None:
        wake = self._wakes[key]
        wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=max(seconds, 0.0))

    async def _drive(self, key: Key) -> None:
        namespace, name = key
        try:
            while not self.stop.is_set():
                try:
                    delay = await self._step(namespace, name)
                except Exception:  # noqa: BLE001 - one evaluation must not end the others
                    _log.exception("evaluation %s/%s: unexpected error; retrying", *key)
                    delay = self.settings.evaluator.status_retry_seconds
                if delay is None:
                    return
                await self._pause(key, delay)
        finally:
            self._runners.pop(key, None)
            self._wakes.pop(key, None)
            self._awaiting_definition.discard(key)
            self._definition_names.pop(key, None)
            self._written.pop(key, None)

    async def _current(self, key: Key) -> k8s.Body | None:
        """The newest known state of an evaluation, without an apiserver read when possible.

        The candidates are the watch cache's copy and the object our own last status write
        returned; the higher resourceVersion wins (the cache may lag our write by a moment, and
        a spec change by someone else shows up in the cache first). Only when neither is known
        (an event that arrived before the watch) or the cache no longer has it (deleted?) is
        the apiserver asked.
        """
        namespace, name = key
        cached = self.cache.get(name, namespace)
        written = self._written.get(key)
        if cached is not None and written is not None:
            newer = _revision(written) > _revision(cached)
            return written if newer else cached
        if cached is not None and written is None:
            return cached
        return await self.cluster.get_or_none(EVALUATIONS, name, namespace)

    async def _step(self, namespace: str, name: str) -> float | None:
        """One pass; returns the seconds until the next pass, or None when done."""
        try:
            body = await self._current((namespace, name))
        except k8s.ApiError as exc:
            _log.warning("cannot read KeptnEvaluation %s/%s: %s", namespace, name, exc)
            return self.settings.evaluator.status_retry_seconds
        if body is None:
            return None
        try:
            evaluation = KeptnEvaluation.model_validate(body)
        except ValidationError as exc:
            _log.warning("KeptnEvaluation %s/%s is invalid: %s", namespace, name, exc)
            return None
        status = evaluation.status or KeptnEvaluationStatus()
        if status.overall_status in (KeptnState.SUCCEEDED, KeptnState.FAILED):
            await self._announce(body, evaluation, status)
            return None
        key = (namespace, name)
        definition = await self.lookups.evaluation_definition(
            evaluation.spec.evaluation_definition, namespace
        )
        if definition is None:
            self._awaiting_definition.add(key)
            self._definition_names[key] = evaluation.spec.evaluation_definition
            await self._definition_missing(body, evaluation, status)
            return self.settings.evaluator.definition_retry_seconds
        self._awaiting_definition.discard(key)
        with self.tracer.start_as_current_span(
            name, kind=trace.SpanKind.CONSUMER, attributes=_span_attributes(evaluation)
        ):
            result = await self._round(evaluation, definition, status)
        self._rounds.inc()
        now = datetime.now(UTC)
        patch: dict[str, Any] = {
            "retryCount": result.retry_count,
            "overallStatus": result.state.value,
            "evaluationStatus": {
                **{old: None for old in status.evaluation_status if old not in result.items},
                **{
                    metric: item.model_dump(mode="json", by_alias=True, exclude_none=True)
                    for metric, item in result.items.items()
                },
            },
        }
        if status.start_time is None:
            patch["startTime"] = clock.format_time(now)
        if result.state.is_completed:
            patch["endTime"] = clock.format_time(now)
        try:
            stored = await self.cluster.patch_status(EVALUATIONS, name, patch, namespace)
        except k8s.NotFound:
            return None
        except k8s.ApiError as exc:
            _log.warning("cannot write status of KeptnEvaluation %s/%s: %s", namespace, name, exc)
            return self.settings.evaluator.status_retry_seconds
        self._written[key] = stored
        if result.state.is_completed:
            self._meters.finished(stored)
            final = KeptnEvaluation.model_validate(stored)
            await self._announce(stored, final, final.status or KeptnEvaluationStatus())
            return None
        try:
            return parse_duration(evaluation.spec.retry_interval).total_seconds()
        except ValueError:
            return 5.0

    async def _round(
        self,
        evaluation: KeptnEvaluation,
        definition: KeptnEvaluationDefinition,
        status: KeptnEvaluationStatus,
    ) -> Round:
        namespace = evaluation.metadata.namespace or ""
        objectives = definition.spec.objectives
        items: dict[str, EvaluationStatusItem] = {}
        pending: list[tuple[str, Objective]] = []
        for objective in objectives:
            metric = objective.keptn_metric_ref.name
            previous = status.evaluation_status.get(metric)
            if previous is not None and previous.status == KeptnState.SUCCEEDED:
                items[metric] = previous
            else:
                pending.append((metric, objective))
        judged = await asyncio.gather(*(self._objective(o, namespace) for _, o in pending))
        for (metric, _), item in zip(pending, judged, strict=True):
            items[metric] = item
        return conclude(status, items, evaluation.spec.retries)

    async def _objective(self, objective: Objective, namespace: str) -> EvaluationStatusItem:
        ref = objective.keptn_metric_ref
        places = [ref.namespace] if ref.namespace else [namespace, self.settings.cluster.namespace]
        body: k8s.Body | None = None
        try:
            for where in dict.fromkeys(places):
                body = self.metrics.get(ref.name, where)
                if body is None:
                    body = await self.cluster.get_or_none(METRICS, ref.name, where)
                if body is not None:
                    break
        except k8s.ApiError as exc:
            return EvaluationStatusItem(
                value="", status=KeptnState.FAILED, message=f"cannot read KeptnMetric: {exc}"
            )
        if body is None:
            where_text = " or ".join(dict.fromkeys(places))
            return EvaluationStatusItem(
                value="",
                status=KeptnState.FAILED,
                message=f"KeptnMetric {ref.name!r} not found in namespace {where_text}",
            )
        metric_status = body.get("status") or {}
        value = str(metric_status.get("value") or "")
        if not value:
            reason = metric_status.get("errMsg")
            message = f"empty value for: {ref.name}" + (
                f" (last fetch failed: {reason})" if reason else ""
            )
            return EvaluationStatusItem(value="", status=KeptnState.FAILED, message=message)
        return judge(value, objective.evaluation_target)

    async def _definition_missing(
        self, body: k8s.Body, evaluation: KeptnEvaluation, status: KeptnEvaluationStatus
    ) -> None:
        namespace = evaluation.metadata.namespace or ""
        name = evaluation.metadata.name or ""
        definition = evaluation.spec.evaluation_definition
        places = " or ".join(dict.fromkeys((namespace, self.settings.cluster.namespace)))
        text = f"KeptnEvaluationDefinition {definition!r} not found in namespace {places}"
        _log.info("KeptnEvaluation %s/%s stays Pending: %s", namespace, name, text)
        if evaluation.status is None or status.start_time is None:
            with contextlib.suppress(k8s.ApiError):
                await self.cluster.patch_status(
                    EVALUATIONS,
                    name,
                    {
                        "overallStatus": KeptnState.PENDING.value,
                        "retryCount": status.retry_count,
                        "evaluationStatus": {},
                        "startTime": clock.format_time(datetime.now(UTC)),
                    },
                    namespace,
                )
        await self.recorder.record(
            body,
            type_="Warning",
            reason="ReconcileEvaluationNotFound",
            message=keptn_message(
                LONG_PHASE,
                text,
                namespace=namespace,
                name=name,
                version=evaluation.spec.workload_version or evaluation.spec.app_version or "",
            ),
        )

    async def _announce(
        self, body: k8s.Body, evaluation: KeptnEvaluation, status: KeptnEvaluationStatus
    ) -> None:
        meta = evaluation.metadata
        state = status.overall_status
        if (meta.annotations or {}).get(ANNOUNCED_ANNOTATION) == state.value:
            return
        namespace, name = meta.namespace or "", meta.name or ""
        spec = evaluation.spec
        payload = events.EvaluationFinished(
            namespace=namespace,
            app=spec.app_name or spec.workload or name,
            evaluation_name=name,
            workload=spec.workload or None,
            state=state,
            message=summary(state, status.evaluation_status)[:32_000],
        )
        with in_trace((meta.annotations or {}).get(TRACE_ANNOTATION)):
            await self.publisher.publish(
                payload, source=self.source, event_id=finished_event_id(meta.uid or name, state)
            )
        self._verdicts.labels(state.value).inc()
        if state == KeptnState.FAILED:
            await self.recorder.record(
                body,
                type_="Warning",
                reason="ReconcileEvaluationReconcileTimeout",
                message=keptn_message(
                    LONG_PHASE,
                    "retryCount exceeded",
                    namespace=namespace,
                    name=name,
                    version=spec.workload_version or spec.app_version or "",
                ),
            )
        with contextlib.suppress(k8s.NotFound):
            await self.cluster.patch(
                EVALUATIONS,
                name,
                {"metadata": {"annotations": {ANNOUNCED_ANNOTATION: state.value}}},
                namespace,
            )


def _revision(body: k8s.Body) -> int:
    """The resourceVersion as a number (etcd revisions are); -1 when it is not one."""
    try:
        return int((body.get("metadata") or {}).get("resourceVersion", ""))
    except ValueError:
        return -1


def _span_attributes(evaluation: KeptnEvaluation) -> dict[str, str]:
    spec = evaluation.spec
    attributes = {
        "keptn.deployment.evaluation.name": evaluation.metadata.name or "",
        "keptn.deployment.evaluation.type": spec.check_type or "",
        "keptn.deployment.app.name": spec.app_name or "",
        "keptn.deployment.app.version": spec.app_version or "",
        "keptn.deployment.workload.name": spec.workload or "",
        "keptn.deployment.workload.version": spec.workload_version or "",
    }
    return {k: v for k, v in attributes.items() if v}
