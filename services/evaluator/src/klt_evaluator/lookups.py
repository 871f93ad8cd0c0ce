"""Where the evaluator finds definitions, providers and templates.

All four kinds are read from cluster-wide watch caches, so the hot paths (a metric fetch, an
evaluation round) make no apiserver round trip for them. An object missing from its cache is
looked up live once before it counts as missing: an object created a moment before the metric
that uses it may not have reached the watch yet.

Parsed provider configurations are memoised per resourceVersion; a thousand metrics on one
provider parse its object once, not a thousand times per interval.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pydantic import ValidationError

from klt_common.clients import cluster as k8s
from klt_common.structs.api.lifecycle import KeptnEvaluationDefinition
from klt_common.structs.api.metrics import (
    AnalysisDefinition,
    AnalysisValueTemplate,
    KeptnMetricsProvider,
)
from klt_evaluator.providers import ProviderConfig, ProviderError

PROVIDERS = k8s.keptn_resource("KeptnMetricsProvider")
METRICS = k8s.keptn_resource("KeptnMetric")
EVALUATIONS = k8s.keptn_resource("KeptnEvaluation")
EVALUATION_DEFINITIONS = k8s.keptn_resource("KeptnEvaluationDefinition")
ANALYSES = k8s.keptn_resource("Analysis")
ANALYSIS_DEFINITIONS = k8s.keptn_resource("AnalysisDefinition")
TEMPLATES = k8s.keptn_resource("AnalysisValueTemplate")


def _describe(exc: ValidationError) -> str:
    errors = exc.errors(include_input=False, include_url=False)
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors[:3])


@dataclass
class Lookups:
    """Read access to the objects the evaluator consults but does not own."""

    cluster: k8s.ClusterClient
    providers: k8s.WatchCache
    evaluation_definitions: k8s.WatchCache
    analysis_definitions: k8s.WatchCache
    templates: k8s.WatchCache
    klt_namespace: str
    default_timeout: float
    _configs: dict[tuple[str, str], tuple[str, ProviderConfig]] = field(default_factory=dict)

    def caches(self) -> Iterable[k8s.WatchCache]:
        return (
            self.providers,
            self.evaluation_definitions,
            self.analysis_definitions,
            self.templates,
        )

    async def _get(self, cache: k8s.WatchCache, name: str, namespace: str) -> k8s.Body | None:
        body = cache.get(name, namespace)
        if body is None:
            body = await self.cluster.get_or_none(cache.resource, name, namespace)
        return body

    async def provider(self, name: str, namespace: str) -> ProviderConfig:
        """The provider ``name`` in ``namespace``, ready to query.

        Raises:
            ProviderError: it does not exist, or its spec cannot be read.
        """
        body = await self._get(self.providers, name, namespace)
        if body is None:
            raise ProviderError(f"KeptnMetricsProvider {name!r} not found in namespace {namespace}")
        version = str(body.get("metadata", {}).get("resourceVersion", ""))
        cached = self._configs.get((namespace, name))
        if cached is not None and cached[0] == version and version:
            return cached[1]
        try:
            model = KeptnMetricsProvider.model_validate(body)
        except ValidationError as exc:
            raise ProviderError(
                f"KeptnMetricsProvider {name!r} is invalid: {_describe(exc)}"
            ) from None
        config = ProviderConfig.from_object(model, default_timeout=self.default_timeout)
        self._configs[(namespace, name)] = (version, config)
        return config

    async def evaluation_definition(
        self, name: str, namespace: str
    ) -> KeptnEvaluationDefinition | None:
        """The definition in the evaluation's namespace, else in the klt namespace."""
        for where in dict.fromkeys((namespace, self.klt_namespace)):
            body = await self._get(self.evaluation_definitions, name, where)
            if body is not None:
                return KeptnEvaluationDefinition.model_validate(body)
        return None

    async def analysis_definition(self, name: str, namespace: str) -> AnalysisDefinition | None:
        body = await self._get(self.analysis_definitions, name, namespace)
        return None if body is None else AnalysisDefinition.model_validate(body)

    async def template(self, name: str, namespace: str) -> AnalysisValueTemplate | None:
        body = await self._get(self.templates, name, namespace)
        return None if body is None else AnalysisValueTemplate.model_validate(body)
