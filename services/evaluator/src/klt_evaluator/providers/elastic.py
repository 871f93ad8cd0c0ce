"""Elasticsearch: a search request whose answer holds the value.

``POST <target>/_search`` with the query as the JSON request body (put an index into the target,
``http://es:9200/logs-*``, to search only it). Authentication: ``Authorization: ApiKey <key>``
with the key read from ``secret[secretKeyRef.key]``. Keptn passed ``secretKeyRef.key`` itself as
the API key; a provider without ``secretKeyRef.name`` keeps working that way, but the key then
sits in the provider's spec in clear text, so use a Secret.

Which number is the value:

- for analyses, the argument ``metricPath`` (a dotted path into the answer, e.g.
  ``aggregations.avg_latency.value``) when given;
- otherwise the ``value`` of the one metric aggregation in ``aggregations`` (several:
  "too many values in query result");
- otherwise, for a query without aggregations, the hit count ``hits.total.value``.

Keptn instead took the first numeric field whose flattened name contained ``metricPath`` (in
map order, so not reproducibly). ``range.step`` is not supported: a search body carries its own
time filter and aggregations.
"""

from __future__ import annotations

import json
from typing import Any, TypeGuard

from klt_evaluator.numbers import format_plain
from klt_evaluator.providers.base import (
    NO_VALUES,
    TOO_MANY_VALUES,
    ProviderConfig,
    ProviderError,
    Query,
    Reading,
    SecretReader,
    to_float,
)
from klt_evaluator.providers.transport import Transport

METRIC_PATH = "metricPath"


def _numeric(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def lookup(document: Any, path: str) -> Any:
    """Follow a dotted path (``a.b.0.c``) into nested JSON; None when it leads nowhere."""
    node = document
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _aggregation_values(aggregations: Any) -> list[float]:
    if not isinstance(aggregations, dict):
        return []
    return [
        to_float(agg["value"])
        for agg in aggregations.values()
        if isinstance(agg, dict) and _numeric(agg.get("value"))
    ]


def extract(answer: dict[str, Any], path: str | None) -> float:
    """The value of a search answer (rules in the module docstring)."""
    if path:
        found = lookup(answer, path)
        if found is None:
            raise ProviderError(f"no value at {path!r} in the search answer")
        if not _numeric(found):
            raise ProviderError(f"the value at {path!r} is not a number")
        return to_float(found)
    if "aggregations" in answer:
        values = _aggregation_values(answer["aggregations"])
        if not values:
            raise ProviderError(NO_VALUES)
        if len(values) > 1:
            raise ProviderError(TOO_MANY_VALUES)
        return values[0]
    total = lookup(answer, "hits.total")
    total = total.get("value") if isinstance(total, dict) else total
    if not _numeric(total):
        raise ProviderError(NO_VALUES)
    return to_float(total)


class ElasticProvider:
    """The ``elastic`` provider type."""

    def __init__(self, transport: Transport, secrets: SecretReader) -> None:
        self._transport = transport
        self._secrets = secrets

    async def _headers(self, config: ProviderConfig) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if config.secret_name:
            data = await self._secrets.read(config.secret_name, config.namespace)
            key = data.get(config.secret_key or "", "")
            if not key:
                raise ProviderError(
                    f"secret {config.secret_name!r} contains no key {config.secret_key!r}"
                )
            headers["Authorization"] = f"ApiKey {key.strip()}"
        elif config.secret_key:
            headers["Authorization"] = f"ApiKey {config.secret_key}"
        return headers

    async def fetch(self, config: ProviderConfig, query: Query) -> Reading:
        if query.series:
            raise ProviderError("the elastic provider does not support range.step")
        try:
            json.loads(query.text)
        except ValueError as exc:
            raise ProviderError(f"the elastic query is not a JSON search body: {exc}") from None
        response = await self._transport.request(
            config,
            "POST",
            f"{config.target.rstrip('/')}/_search",
            data=query.text.encode(),
            headers=await self._headers(config),
        )
        try:
            answer: Any = json.loads(response.body)
        except ValueError:
            snippet = response.body[:200].decode(errors="replace")
            raise ProviderError(
                f"{config.type} provider answered HTTP {response.status}: {snippet}",
                raw=response.body,
            ) from None
        if not isinstance(answer, dict):
            raise ProviderError(NO_VALUES, raw=response.body)
        if "error" in answer:
            error = answer["error"]
            if isinstance(error, dict):
                text = f"{error.get('type', 'error')}: {error.get('reason', '')}".rstrip(": ")
            else:
                text = str(error)
            raise ProviderError(f"provider api response: {text}", raw=response.body)
        if response.status >= 300:
            raise ProviderError(
                f"{config.type} provider answered HTTP {response.status}", raw=response.body
            )
        try:
            value = extract(answer, query.variables.get(METRIC_PATH))
        except ProviderError as exc:
            raise ProviderError(str(exc), raw=response.body) from None
        return Reading((value,), format_plain(value), response.body)
