"""Prometheus, Thanos and Cortex: the Prometheus HTTP API.

- Instant query (a KeptnMetric without ``range``): ``POST <target>/api/v1/query`` with
  ``query`` and ``time``.
- Range query (``range.interval``, or an analysis' timeframe): ``POST /api/v1/query_range``
  with ``start``, ``end`` and ``step``. Without ``range.step`` the step is the interval itself,
  and for analyses one minute, as in Keptn; the value is then the series' first sample. With
  ``range.step`` every sample is returned for aggregation.
- Exactly one series is required: "no values in query result" / "too many values in query
  result". A scalar result (``1 + 1``) is accepted as one value.
- Optional basic auth: the Secret named by ``secretKeyRef.name`` must hold the keys ``user``
  and ``password`` (``secretKeyRef.key`` is not used, as in Keptn).

The form body is POSTed (Prometheus, Thanos and Cortex all accept it), so long queries never hit
URL length limits. The value is the sample string exactly as Prometheus wrote it (``1.5``,
``NaN``); ``rawValue`` is its JSON form (``"1.5"``), or the JSON list of samples for a series.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from klt_evaluator.numbers import parse_number
from klt_evaluator.providers.base import (
    NO_VALUES,
    TOO_MANY_VALUES,
    ProviderConfig,
    ProviderError,
    Query,
    Reading,
    SecretReader,
)
from klt_evaluator.providers.transport import Transport

CANNOT_CAST = "could not cast result"


def _api_url(target: str, path: str) -> str:
    return f"{target.rstrip('/')}/api/v1/{path}"


def _unix(seconds: float) -> str:
    return f"{seconds:.3f}"


def _sample(pair: Any) -> str:
    if not isinstance(pair, list) or len(pair) != 2 or not isinstance(pair[1], str):
        raise ProviderError(CANNOT_CAST)
    return pair[1]


def _number(text: str) -> float:
    try:
        return parse_number(text)
    except ValueError:
        raise ProviderError(f"sample {text!r} is not a number") from None


class PrometheusProvider:
    """The ``prometheus``, ``thanos`` and ``cortex`` provider types."""

    def __init__(self, transport: Transport, secrets: SecretReader) -> None:
        self._transport = transport
        self._secrets = secrets

    async def _headers(self, config: ProviderConfig) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if not config.secret_name:
            return headers
        data = await self._secrets.read(config.secret_name, config.namespace)
        if not data.get("user") or "password" not in data:
            raise ProviderError(
                f"secret {config.secret_name!r} does not contain the keys user and password"
            )
        pair = f"{data['user']}:{data['password']}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        return headers

    async def fetch(self, config: ProviderConfig, query: Query) -> Reading:
        headers = await self._headers(config)
        if query.start is None:
            form = {"query": query.text, "time": _unix(query.end.timestamp())}
            url = _api_url(config.target, "query")
        else:
            step = query.step.total_seconds() if query.step else 60.0
            form = {
                "query": query.text,
                "start": _unix(query.start.timestamp()),
                "end": _unix(query.end.timestamp()),
                "step": f"{max(step, 0.001):g}",
            }
            url = _api_url(config.target, "query_range")
        response = await self._transport.request(config, "POST", url, data=form, headers=headers)
        try:
            payload = json.loads(response.body)
        except ValueError:
            snippet = response.body[:200].decode(errors="replace")
            raise ProviderError(
                f"{config.type} provider answered HTTP {response.status}: {snippet}",
                raw=response.body,
            ) from None
        if not isinstance(payload, dict):
            raise ProviderError(CANNOT_CAST, raw=response.body)
        if payload.get("status") != "success":
            kind = payload.get("errorType") or f"HTTP {response.status}"
            raise ProviderError(
                f"{kind}: {payload.get('error', 'query failed')}", raw=response.body
            )
        data = payload.get("data") or {}
        if not isinstance(data, dict):
            raise ProviderError(CANNOT_CAST, raw=response.body)
        return self._read(data, query)

    @staticmethod
    def _read(data: dict[str, Any], query: Query) -> Reading:
        kind = data.get("resultType")
        result = data.get("result")
        if kind == "scalar":
            text = _sample(result)
            return Reading((_number(text),), text, json.dumps(text).encode())
        if kind == "vector" and isinstance(result, list):
            if not result:
                raise ProviderError(NO_VALUES)
            if len(result) > 1:
                raise ProviderError(TOO_MANY_VALUES)
            text = _sample(result[0].get("value") if isinstance(result[0], dict) else None)
            value = _number(text)
            if query.series:
                return Reading((value,), "", json.dumps([text]).encode())
            return Reading((value,), text, json.dumps(text).encode())
        if kind == "matrix" and isinstance(result, list):
            if not result:
                raise ProviderError(NO_VALUES)
            if len(result) > 1:
                raise ProviderError(TOO_MANY_VALUES)
            pairs = (result[0].get("values") if isinstance(result[0], dict) else None) or []
            if not isinstance(pairs, list):
                raise ProviderError(CANNOT_CAST)
            samples = [_sample(pair) for pair in pairs]
            if not samples:
                raise ProviderError(NO_VALUES)
            if query.series:
                values = tuple(_number(s) for s in samples)
                return Reading(values, "", json.dumps(samples).encode())
            return Reading((_number(samples[0]),), samples[0], json.dumps(samples[0]).encode())
        raise ProviderError(CANNOT_CAST)
