"""Datadog: the v1 metrics query API.

``GET <target>/api/v1/query?from=<epoch s>&to=<epoch s>&query=<query>`` with the headers
``DD-API-KEY`` and ``DD-APPLICATION-KEY``, read from the keys ``DD_CLIENT_API_KEY`` and
``DD_CLIENT_APP_KEY`` of the Secret named by ``secretKeyRef.name``. Without ``range`` the window
is the last five minutes (as Keptn). With ``range.step`` the step is passed as ``interval``
(milliseconds) and every point is returned for aggregation.

The answer must hold exactly one series (Keptn took the first and ignored the rest); the value
is the mean of its non-null points, written with five significant digits as Keptn's provider
did (``strconv.FormatFloat(v, 'g', 5, 64)``). ``{"error": ...}`` or ``{"errors": [...]}`` in the
answer becomes the errMsg.
"""

from __future__ import annotations

import json
import math
from datetime import timedelta
from typing import Any

from klt_evaluator.numbers import format_g5
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

API_KEY = "DD_CLIENT_API_KEY"
APP_KEY = "DD_CLIENT_APP_KEY"
DEFAULT_WINDOW = timedelta(minutes=5)


class DatadogProvider:
    """The ``datadog`` provider type."""

    def __init__(self, transport: Transport, secrets: SecretReader) -> None:
        self._transport = transport
        self._secrets = secrets

    async def _keys(self, config: ProviderConfig) -> tuple[str, str]:
        if not config.secret_name:
            raise ProviderError("the SecretKeyRef property with the DataDog API Key is missing")
        data = await self._secrets.read(config.secret_name, config.namespace)
        api_key, app_key = data.get(API_KEY, ""), data.get(APP_KEY, "")
        if not api_key or not app_key:
            raise ProviderError(
                f"secret {config.secret_name!r} does not contain {API_KEY} or {APP_KEY}"
            )
        return api_key.strip(), app_key.strip()

    async def fetch(self, config: ProviderConfig, query: Query) -> Reading:
        api_key, app_key = await self._keys(config)
        start = query.start if query.start is not None else query.end - DEFAULT_WINDOW
        params = {
            "from": str(int(start.timestamp())),
            "to": str(int(query.end.timestamp())),
            "query": query.text,
        }
        if query.series and query.step is not None:
            params["interval"] = str(int(query.step.total_seconds() * 1000))
        response = await self._transport.request(
            config,
            "GET",
            f"{config.target.rstrip('/')}/api/v1/query",
            params=params,
            headers={
                "Accept": "application/json",
                "DD-API-KEY": api_key,
                "DD-APPLICATION-KEY": app_key,
            },
        )
        try:
            payload: Any = json.loads(response.body)
        except ValueError:
            snippet = response.body[:200].decode(errors="replace")
            raise ProviderError(
                f"{config.type} provider answered HTTP {response.status}: {snippet}",
                raw=response.body,
            ) from None
        if not isinstance(payload, dict):
            raise ProviderError(f"{config.type} provider answered HTTP {response.status}")
        if payload.get("error"):
            raise ProviderError(str(payload["error"]), raw=response.body)
        if payload.get("errors"):
            errors = payload["errors"]
            text = "; ".join(map(str, errors)) if isinstance(errors, list) else str(errors)
            raise ProviderError(f"provider api response: {text}", raw=response.body)
        if response.status >= 300:
            raise ProviderError(
                f"{config.type} provider answered HTTP {response.status}", raw=response.body
            )
        series = payload.get("series") or []
        if not isinstance(series, list):
            raise ProviderError("the answer's series is not a list", raw=response.body)
        if not series:
            raise ProviderError(NO_VALUES, raw=response.body)
        if len(series) > 1:
            raise ProviderError(TOO_MANY_VALUES, raw=response.body)
        points = (series[0].get("pointlist") if isinstance(series[0], dict) else None) or []
        if not isinstance(points, list):
            raise ProviderError("the answer's pointlist is not a list", raw=response.body)
        values = [
            to_float(point[1])
            for point in points
            if isinstance(point, list) and len(point) > 1 and isinstance(point[1], int | float)
        ]
        if not values:
            raise ProviderError("no metric points in query result", raw=response.body)
        if query.series:
            return Reading(tuple(values), "", response.body)
        mean = math.fsum(values) / len(values)
        return Reading((mean,), format_g5(mean), response.body)
