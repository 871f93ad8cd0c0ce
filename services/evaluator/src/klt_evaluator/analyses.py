"""Analysis: fetch an AnalysisDefinition's templated queries over a time frame and score them.

Life of an Analysis (state ``Pending`` → ``Progressing`` → ``Completed``):

1. The AnalysisDefinition is looked up in ``spec.analysisDefinition.namespace``, else the
   Analysis' namespace. Missing: the Analysis stays Pending, a Warning Event
   (``AnalysisDefinitionNotFound``) says where klt looked, and it looks again every
   ``definition_retry_seconds`` (or at once when the definition appears).
2. The time frame is fixed once and written to ``status.timeframe``: ``spec.timeframe.from`` /
   ``to``, or ``now - recent`` / ``now`` for ``recent``. The state becomes Progressing.
3. Each objective's AnalysisValueTemplate (``ref.namespace``, else the definition's namespace) is
   rendered with ``spec.args`` (the Go-template subset in :mod:`klt_evaluator.gotemplate`) and
   sent to its provider (``provider.namespace``, else the definition's namespace). Queries of all
   analyses share ``analysis_concurrency`` slots. Each answer is stored in
   ``status.storedValues[<template>[-<namespace>]]`` as ``{objectiveReference, query, value,
   errMsg}``; stored values without an error are never fetched again.
4. While any entry has an ``errMsg`` the analysis stays Progressing and only those entries are
   fetched again, every ``analysis_retry_seconds`` (Keptn: 10 s).
5. With every value in, the objectives are scored (:mod:`klt_evaluator.scoring`); ``status.raw``
   gets the JSON verdict, ``status.pass``/``warning`` the outcome, and the state is Completed.
   A Completed analysis is never looked at again.

The Prometheus gauges ``keptn_analysis_result`` (the achieved percentage) and
``keptn_objective_result`` (each objective's value) are computed from the watch cache on every
scrape (:class:`AnalysisResultsCollector`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from pydantic import ValidationError

from klt_common.clients import cluster as k8s
from klt_common.clients.events_recorder import EventRecorder
from klt_common.structs.api._base import parse_duration
from klt_common.structs.api.enums import AnalysisState
from klt_common.structs.api.metrics import (
    Analysis,
    AnalysisDefinition,
    AnalysisStatus,
    ObjectReference,
    ProviderResult,
)
from klt_evaluator import clock, gotemplate
from klt_evaluator.lookups import ANALYSES, Lookups
from klt_evaluator.providers import ProviderError, Providers, Query
from klt_evaluator.scoring import objective_key, score_analysis
from klt_evaluator.settings import EvaluatorSettings

_log = logging.getLogger(__name__)

ANALYSIS_STEP = timedelta(minutes=1)
"""Resolution of range queries for analyses (Keptn: one minute)."""

Key = tuple[str, str]


def fix_timeframe(analysis: Analysis, now: datetime) -> tuple[datetime, datetime]:
    """The absolute time frame of an analysis: the one in its status, else from its spec.

    Raises:
        ValueError: the spec gives neither ``from``/``to`` nor ``recent``, or ``to`` is not
            after ``from``.
    """
    if analysis.status is not None:
        fixed = analysis.status.timeframe
        if fixed.from_ is not None and fixed.to is not None:
            return fixed.from_, fixed.to
    spec = analysis.spec.timeframe
    if spec.recent:
        span = parse_duration(spec.recent)
        return now - span, now
    if spec.from_ is None or spec.to is None:
        raise ValueError("spec.timeframe needs either recent, or both from and to")
    if spec.to <= spec.from_:
        raise ValueError("spec.timeframe.to must be after spec.timeframe.from")
    return spec.from_, spec.to


def needs_fetch(stored: ProviderResult | None) -> bool:
    return stored is None or bool(stored.err_msg) or stored.value is None


@dataclass
class Analyses:
    """Drives every Analysis of this shard to Completed."""

    settings: EvaluatorSettings
    cluster: k8s.ClusterClient
    cache: k8s.WatchCache
    lookups: Lookups
    providers: Providers
    recorder: EventRecorder
    registry: CollectorRegistry
    stop: asyncio.Event
    _runners: dict[Key, asyncio.Task[None]] = field(default_factory=dict)
    _wakes: dict[Key, asyncio.Event] = field(default_factory=dict)
    _awaiting: dict[Key, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._events = self.cache.subscribe()
        self._definition_events = self.lookups.analysis_definitions.subscribe()
        self._slots = asyncio.Semaphore(self.settings.evaluator.analysis_concurrency)
        self._completed = Counter(
            "klt_evaluator_analyses",
            "Analyses completed, by verdict",
            ["verdict"],
            registry=self.registry,
        )

    def ensure(self, key: Key) -> None:
        if self.stop.is_set():
            return
        task = self._runners.get(key)
        if task is not None and not task.done():
            return
        self._wakes[key] = asyncio.Event()
        self._runners[key] = asyncio.create_task(self._drive(key), name=f"analysis:{key[1]}")

    def _consider(self, body: k8s.Body) -> None:
        state = (body.get("status") or {}).get("state") or "Pending"
        if state != AnalysisState.COMPLETED.value:
            self.ensure(k8s.WatchCache.key_of(body))

    async def run(self, stop: asyncio.Event) -> None:
        await clock.wait_or_stop(self.cache.wait_synced(), stop)
        if not stop.is_set():
            for body in self.cache.values():
                self._consider(body)
        followers = [
            asyncio.create_task(self._follow(), name="analyses:follow"),
            asyncio.create_task(self._follow_definitions(), name="analyses:definitions"),
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

    async def _follow(self) -> None:
        while True:
            event = await self._events.get()
            if event.type in ("ADDED", "MODIFIED"):
                self._consider(event.object)

    async def _follow_definitions(self) -> None:
        while True:
            event = await self._definition_events.get()
            if event.type == "DELETED":
                continue
            meta = event.object.get("metadata") or {}
            wanted = f"{meta.get('namespace')}/{meta.get('name')}"
            for key, definition in list(self._awaiting.items()):
                if definition == wanted and key in self._wakes:
                    self._wakes[key].set()

    async def _drive(self, key: Key) -> None:
        namespace, name = key
        try:
            while not self.stop.is_set():
                try:
                    delay = await self._step(namespace, name)
                except Exception:  # noqa: BLE001 - one analysis must not end the others
                    _log.exception("analysis %s/%s: unexpected error; retrying", namespace, name)
                    delay = self.settings.evaluator.analysis_retry_seconds
                if delay is None:
                    return
                wake = self._wakes[key]
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout=delay)
        finally:
            self._runners.pop(key, None)
            self._wakes.pop(key, None)
            self._awaiting.pop(key, None)

    async def _write(self, name: str, namespace: str, status: dict[str, Any]) -> bool:
        try:
            await self.cluster.patch_status(ANALYSES, name, status, namespace)
        except k8s.NotFound:
            return False
        except k8s.ApiError as exc:
            _log.warning("cannot write status of Analysis %s/%s: %s", namespace, name, exc)
            return False
        return True

    async def _step(self, namespace: str, name: str) -> float | None:
        body = await self.cluster.get_or_none(ANALYSES, name, namespace)
        if body is None:
            return None
        try:
            analysis = Analysis.model_validate(body)
        except ValidationError as exc:
            _log.warning("Analysis %s/%s is invalid: %s", namespace, name, exc)
            return None
        status = analysis.status or AnalysisStatus()
        if status.state == AnalysisState.COMPLETED:
            return None
        ref = analysis.spec.analysis_definition
        definition_ns = ref.namespace or namespace
        definition = await self.lookups.analysis_definition(ref.name, definition_ns)
        if definition is None:
            self._awaiting[(namespace, name)] = f"{definition_ns}/{ref.name}"
            text = f"AnalysisDefinition {ref.name!r} not found in namespace {definition_ns}"
            _log.info("Analysis %s/%s stays Pending: %s", namespace, name, text)
            await self.recorder.record(
                body, type_="Warning", reason="AnalysisDefinitionNotFound", message=text
            )
            return self.settings.evaluator.definition_retry_seconds
        self._awaiting.pop((namespace, name), None)
        try:
            start, end = fix_timeframe(analysis, datetime.now(UTC))
        except ValueError as exc:
            await self.recorder.record(
                body, type_="Warning", reason="AnalysisInvalidTimeframe", message=str(exc)
            )
            return self.settings.evaluator.definition_retry_seconds
        timeframe = {"from": clock.format_time(start), "to": clock.format_time(end)}
        if status.state != AnalysisState.PROGRESSING or status.timeframe.from_ is None:
            await self._write(
                name, namespace, {"state": AnalysisState.PROGRESSING.value, "timeframe": timeframe}
            )
        stored = dict(status.stored_values or {})
        todo: dict[str, ObjectReference] = {}
        for objective in definition.spec.objectives or []:
            key = objective_key(objective.analysis_value_template_ref)
            if needs_fetch(stored.get(key)):
                todo[key] = objective.analysis_value_template_ref
        fetched = await asyncio.gather(
            *(self._fetch(ref, definition, analysis, start, end) for ref in todo.values())
        )
        stored.update(zip(todo, fetched, strict=True))
        stored_json = {
            key: value.model_dump(mode="json", by_alias=True, exclude_none=True)
            for key, value in stored.items()
        }
        if any(value.err_msg for value in stored.values()):
            await self._write(
                name,
                namespace,
                {
                    "state": AnalysisState.PROGRESSING.value,
                    "timeframe": timeframe,
                    "storedValues": stored_json,
                },
            )
            return self.settings.evaluator.analysis_retry_seconds
        result = score_analysis(definition.spec.objectives, stored, definition.spec.total_score)
        written = await self._write(
            name,
            namespace,
            {
                "state": AnalysisState.COMPLETED.value,
                "timeframe": timeframe,
                "storedValues": stored_json,
                "raw": result.raw(),
                "pass": result.passed,
                "warning": result.warning,
            },
        )
        if not written:
            return self.settings.evaluator.status_retry_seconds
        verdict = "pass" if result.passed else "warning" if result.warning else "fail"
        self._completed.labels(verdict).inc()
        return None

    async def _fetch(
        self,
        ref: ObjectReference,
        definition: AnalysisDefinition,
        analysis: Analysis,
        start: datetime,
        end: datetime,
    ) -> ProviderResult:
        definition_ns = definition.metadata.namespace or ""
        template_ns = ref.namespace or definition_ns
        result = ProviderResult(objective_reference=ref)
        template = await self.lookups.template(ref.name, template_ns)
        if template is None:
            result.err_msg = (
                f"AnalysisValueTemplate {ref.name!r} not found in namespace {template_ns}"
            )
            return result
        args = analysis.spec.args or {}
        try:
            query = gotemplate.render(template.spec.query, args)
        except gotemplate.TemplateError as exc:
            result.err_msg = f"could not template the args: {exc}"
            return result
        result.query = query
        provider_ref = template.spec.provider
        try:
            config = await self.lookups.provider(
                provider_ref.name, provider_ref.namespace or definition_ns
            )
            async with self._slots:
                reading = await self.providers.fetch(
                    config,
                    Query(text=query, start=start, end=end, step=ANALYSIS_STEP, variables=args),
                )
        except ProviderError as exc:
            result.err_msg = str(exc)
            return result
        result.value = reading.text
        return result


class AnalysisResultsCollector:
    """``keptn_analysis_result`` and ``keptn_objective_result`` from completed Analyses.

    Parsed verdicts are memoised per (object, resourceVersion), so a scrape costs one dict
    lookup per analysis.
    """

    def __init__(self, cache: k8s.WatchCache) -> None:
        self._cache = cache
        self._parsed: dict[tuple[str, str], tuple[str, dict[str, Any] | None]] = {}

    def _verdict(self, body: k8s.Body) -> dict[str, Any] | None:
        key = k8s.WatchCache.key_of(body)
        version = str((body.get("metadata") or {}).get("resourceVersion", ""))
        cached = self._parsed.get(key)
        if cached is not None and cached[0] == version:
            return cached[1]
        raw = (body.get("status") or {}).get("raw")
        try:
            verdict = json.loads(raw) if raw else None
        except ValueError:
            verdict = None
        self._parsed[key] = (version, verdict if isinstance(verdict, dict) else None)
        return self._parsed[key][1]

    def collect(self) -> Iterator[Metric]:
        analysis_family = GaugeMetricFamily(
            "keptn_analysis_result",
            "Result of an Analysis: the achieved percentage of its maximum score",
            labels=["name", "namespace", "from", "to"],
        )
        objective_family = GaugeMetricFamily(
            "keptn_objective_result",
            "Value of an Analysis objective",
            labels=[
                "name",
                "namespace",
                "analysis_name",
                "analysis_namespace",
                "key_objective",
                "weight",
                "from",
                "to",
            ],
        )
        live = set()
        for body in self._cache.values():
            key = k8s.WatchCache.key_of(body)
            live.add(key)
            status = body.get("status") or {}
            if status.get("state") != AnalysisState.COMPLETED.value:
                continue
            verdict = self._verdict(body)
            if verdict is None:
                continue
            frame = status.get("timeframe") or {}
            start, end = str(frame.get("from", "")), str(frame.get("to", ""))
            namespace, name = key
            maximum = float(verdict.get("maximumScore") or 0)
            total = float(verdict.get("totalScore") or 0)
            percentage = (
                0.0 if maximum == 0 else 100.0 if total == maximum else total / maximum * 100
            )
            analysis_family.add_metric([name, namespace, start, end], percentage)
            for item in verdict.get("objectiveResults") or []:
                objective = item.get("objective") or {}
                ref = objective.get("analysisValueTemplateRef") or {}
                objective_family.add_metric(
                    [
                        str(ref.get("name", "")),
                        str(ref.get("namespace", "")),
                        name,
                        namespace,
                        "true" if objective.get("keyObjective") else "false",
                        str(objective.get("weight", 1)),
                        start,
                        end,
                    ],
                    float(item.get("value") or 0),
                )
        for gone in set(self._parsed) - live:
            del self._parsed[gone]
        yield analysis_family
        yield objective_family
