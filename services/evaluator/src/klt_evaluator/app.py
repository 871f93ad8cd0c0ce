"""Wiring of the evaluator service: what it registers on the service template.

- watch caches: the KeptnMetrics, KeptnEvaluations and Analyses of this shard (label selector
  from ``settings.shard_selector()``), and every KeptnMetricsProvider, KeptnEvaluationDefinition,
  AnalysisDefinition and AnalysisValueTemplate (read-only lookups);
- loops: the metric fetch loop (:mod:`klt_evaluator.metrics`), the evaluation and analysis
  runners, and the sweeper that closes idle provider sessions;
- the ``evaluation.requested`` handler (consumer group ``klt-evaluator``);
- exposure: KeptnMetric gauges and the analysis gauges on ``/metrics`` (custom collectors over the
  caches), Keptn's ``keptn_evaluation_*`` instruments (``meters``, kept by the evaluation
  runner), and ``GET /api/v1/metrics/{namespace}/{metric}`` for KEDA.

Nothing here keeps state beyond caches: restart it at any time.
"""

from __future__ import annotations

from prometheus_client import Gauge

from klt_common.clients import cluster as k8s
from klt_common.clients.events_recorder import EventRecorder
from klt_common.service import ServiceContext
from klt_common.structs import events
from klt_evaluator import api, lookups
from klt_evaluator.analyses import Analyses, AnalysisResultsCollector
from klt_evaluator.evaluations import Evaluations
from klt_evaluator.metrics import MetricLoop, MetricValuesCollector
from klt_evaluator.providers import Providers, SecretReader, Transport
from klt_evaluator.settings import EvaluatorSettings


async def setup(context: ServiceContext[EvaluatorSettings]) -> None:
    settings = context.settings
    group = settings.evaluator
    cluster = context.cluster
    owned = settings.shard_selector()

    def cache(resource: k8s.Resource, selector: str | None = None) -> k8s.WatchCache:
        return context.watch(k8s.WatchCache(cluster, resource, label_selector=selector))

    metric_cache = cache(lookups.METRICS, owned)
    evaluation_cache = cache(lookups.EVALUATIONS, owned)
    analysis_cache = cache(lookups.ANALYSES, owned)
    found = lookups.Lookups(
        cluster=cluster,
        providers=cache(lookups.PROVIDERS),
        evaluation_definitions=cache(lookups.EVALUATION_DEFINITIONS),
        analysis_definitions=cache(lookups.ANALYSIS_DEFINITIONS),
        templates=cache(lookups.TEMPLATES),
        klt_namespace=settings.cluster.namespace,
        default_timeout=group.provider_timeout_seconds,
    )

    transport = Transport(
        connections_per_target=group.connections_per_target,
        max_response_bytes=group.max_response_bytes,
        idle_seconds=group.idle_session_seconds,
    )
    context.closers.append(transport.close)
    providers = Providers.build(
        transport,
        SecretReader(cluster),
        dql_auth_url=group.dql_auth_url,
        dql_poll_interval=group.dql_poll_interval_seconds,
        dql_max_polls=group.dql_max_polls,
    )
    recorder = EventRecorder(cluster, component="klt-evaluator", instance=context.instance)

    metric_loop = MetricLoop(
        settings=settings,
        cluster=cluster,
        cache=metric_cache,
        lookups=found,
        providers=providers,
        registry=context.registry,
    )
    evaluations = Evaluations(
        settings=settings,
        cluster=cluster,
        cache=evaluation_cache,
        metrics=metric_cache,
        lookups=found,
        publisher=context.publisher,
        recorder=recorder,
        source=context.source,
        registry=context.registry,
        tracer=context.tracer,
        stop=context.stop,
    )
    analyses = Analyses(
        settings=settings,
        cluster=cluster,
        cache=analysis_cache,
        lookups=found,
        providers=providers,
        recorder=recorder,
        registry=context.registry,
        stop=context.stop,
    )

    context.loop("metrics", lambda: metric_loop.run(context.stop))
    context.loop("evaluations", lambda: evaluations.run(context.stop))
    context.loop("analyses", lambda: analyses.run(context.stop))
    context.loop("provider-sessions", lambda: transport.run_sweeper(context.stop))

    consumer = context.consumer(group.consumer_group)
    consumer.register(events.EvaluationRequested, evaluations.on_requested)

    sessions = Gauge(
        "klt_evaluator_provider_sessions",
        "Open HTTP sessions to provider targets (one per target and TLS setting)",
        registry=context.registry,
    )
    sessions.set_function(lambda: transport.session_count)
    context.registry.register(MetricValuesCollector(metric_cache))
    context.registry.register(AnalysisResultsCollector(analysis_cache))
    context.routes.extend(api.routes(cluster, metric_cache))
