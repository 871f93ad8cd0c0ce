"""Metrics providers: Keptn's seven types plus a generic HTTP/JSON one.

======================  =====================================================================
type                    backend
======================  =====================================================================
``prometheus``          Prometheus HTTP API (``thanos`` and ``cortex`` are the same API)
``dynatrace``           Dynatrace metrics API v2, ``Api-Token`` auth
``dql``                 Dynatrace Query Language on Grail, OAuth client credentials
``datadog``             Datadog v1 metrics query API, API and application keys
``elastic``             Elasticsearch ``_search``
``http``                any JSON endpoint plus a JSONPath (keptn#745)
======================  =====================================================================

A provider's type is the annotation ``evaluator.klt.sh/provider-type`` when set, else
``spec.type``, else the provider's name (as in Keptn), case-insensitive.
"""

from __future__ import annotations

from dataclasses import dataclass

from klt_evaluator.providers.base import Provider, ProviderConfig, ProviderError, Query, Reading
from klt_evaluator.providers.base import SecretReader as SecretReader
from klt_evaluator.providers.datadog import DatadogProvider
from klt_evaluator.providers.dynatrace import DqlProvider, DynatraceProvider
from klt_evaluator.providers.elastic import ElasticProvider
from klt_evaluator.providers.generic import GenericProvider
from klt_evaluator.providers.prometheus import PrometheusProvider
from klt_evaluator.providers.transport import Transport

__all__ = [
    "KNOWN_TYPES",
    "Provider",
    "ProviderConfig",
    "ProviderError",
    "Providers",
    "Query",
    "Reading",
    "SecretReader",
    "Transport",
]

KNOWN_TYPES = ("prometheus", "thanos", "cortex", "dynatrace", "dql", "datadog", "elastic", "http")


@dataclass(frozen=True)
class Providers:
    """Every provider type, sharing one transport and one secret reader."""

    transport: Transport
    by_type: dict[str, Provider]

    @classmethod
    def build(
        cls,
        transport: Transport,
        secrets: SecretReader,
        *,
        dql_auth_url: str,
        dql_poll_interval: float,
        dql_max_polls: int,
    ) -> Providers:
        prometheus = PrometheusProvider(transport, secrets)
        return cls(
            transport,
            {
                "prometheus": prometheus,
                "thanos": prometheus,
                "cortex": prometheus,
                "dynatrace": DynatraceProvider(transport, secrets),
                "dql": DqlProvider(
                    transport,
                    secrets,
                    auth_url=dql_auth_url,
                    poll_interval=dql_poll_interval,
                    max_polls=dql_max_polls,
                ),
                "datadog": DatadogProvider(transport, secrets),
                "elastic": ElasticProvider(transport, secrets),
                "http": GenericProvider(transport, secrets),
            },
        )

    async def fetch(self, config: ProviderConfig, query: Query) -> Reading:
        """Run ``query`` on the provider ``config`` describes.

        Raises:
            ProviderError: an unknown type, or the provider's own failure.
        """
        provider = self.by_type.get(config.type)
        if provider is None:
            raise ProviderError(
                f"provider type {config.type!r} is not supported (known: {', '.join(KNOWN_TYPES)})"
            )
        return await provider.fetch(config, query)
