"""Dynatrace: the metrics API v2 (``dynatrace``) and DQL on Grail (``dql``).

``dynatrace``
    ``GET <target>/api/v2/metrics/query?metricSelector=<query>`` (``/api/`` is appended to the
    target when missing, as Keptn did), header ``Authorization: Api-Token <token>``, the token
    being ``secret[secretKeyRef.key]``. A ranged metric or an analysis adds ``from``/``to``
    (epoch milliseconds); ``range.step`` is passed as ``resolution``. The answer must hold
    exactly one series; its value is the mean of its non-null data points, written with six
    decimals as Keptn's provider did (``12.500000``). Keptn averaged across *all* series of the
    answer; klt refuses several series ("too many values in query result"), since an average
    over, say, every host is rarely what was meant; use ``:splitBy()`` or an aggregation in the
    selector.

``dql``
    OAuth client credentials: the secret value ``dt0s08.<id>.<secret>`` yields the client id
    ``dt0s08.<id>`` and the client secret (the whole token), exchanged at the SSO endpoint
    (setting ``dql_auth_url`` or annotation ``evaluator.klt.sh/dql-auth-url``) for a bearer
    token with the scopes ``storage:metrics:read environment:roles:viewer``. Access tokens are
    kept until five minutes before they expire. The query is POSTed to
    ``<target>/platform/storage/query/v1/query:execute``; a ``202`` with a ``requestToken`` is
    polled at ``query:poll`` until the state is ``SUCCEEDED``. The answer must hold one record;
    its value is the last element of its one numeric array field (a ``timeseries`` result) or
    its one numeric field (a ``summarize`` result).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import time
from dataclasses import dataclass
from typing import Any, TypeGuard

from klt_evaluator.numbers import format_fixed6
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
from klt_evaluator.providers.transport import Response, Transport

DQL_AUTH_URL_ANNOTATION = "evaluator.klt.sh/dql-auth-url"
DQL_SCOPES = "storage:metrics:read environment:roles:viewer"
_DQL_PATH = "/platform/storage/query/v1/query:"
_TOKEN_PREFIX = "dt0s08"  # noqa: S105 - the format marker of the secret, not a secret


async def _token(secrets: SecretReader, config: ProviderConfig, what: str) -> str:
    if not config.secret_name:
        raise ProviderError(f"the SecretKeyRef property with the {what} is missing")
    data = await secrets.read(config.secret_name, config.namespace)
    key = config.secret_key or ""
    token = data.get(key, "")
    if not token:
        raise ProviderError(f"secret {config.secret_name!r} contains no key {key!r}")
    return token.strip()


def _json(response: Response, config: ProviderConfig) -> Any:
    try:
        return json.loads(response.body)
    except ValueError:
        snippet = response.body[:200].decode(errors="replace")
        raise ProviderError(
            f"{config.type} provider answered HTTP {response.status}: {snippet}",
            raw=response.body,
        ) from None


def _api_error(payload: Any) -> str | None:
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        message = payload["error"].get("message") or payload["error"].get("code")
        return f"provider api response: {message}"
    return None


class DynatraceProvider:
    """The ``dynatrace`` provider type (metrics API v2)."""

    def __init__(self, transport: Transport, secrets: SecretReader) -> None:
        self._transport = transport
        self._secrets = secrets

    async def fetch(self, config: ProviderConfig, query: Query) -> Reading:
        token = await _token(self._secrets, config, "Dynatrace token")
        base = config.target if config.target.endswith("/") else config.target + "/"
        if not base.endswith("api/"):
            base += "api/"
        params = {"metricSelector": query.text}
        if query.start is not None:
            params["from"] = str(int(query.start.timestamp() * 1000))
            params["to"] = str(int(query.end.timestamp() * 1000))
        if query.series and query.step_text:
            params["resolution"] = query.step_text
        response = await self._transport.request(
            config,
            "GET",
            base + "v2/metrics/query",
            params=params,
            headers={"Authorization": f"Api-Token {token}", "Accept": "application/json"},
        )
        payload = _json(response, config)
        if (error := _api_error(payload)) is not None:
            raise ProviderError(error, raw=response.body)
        if response.status >= 300 or not isinstance(payload, dict):
            raise ProviderError(
                f"{config.type} provider answered HTTP {response.status}", raw=response.body
            )
        series = [
            data
            for result in _list(payload.get("result"))
            if isinstance(result, dict)
            for data in _list(result.get("data"))
            if isinstance(data, dict)
        ]
        if not series:
            raise ProviderError(NO_VALUES, raw=response.body)
        if len(series) > 1:
            raise ProviderError(TOO_MANY_VALUES, raw=response.body)
        values = [to_float(v) for v in _list(series[0].get("values")) if _numeric(v)]
        if not values:
            raise ProviderError(NO_VALUES, raw=response.body)
        if query.series:
            return Reading(tuple(values), "", response.body)
        mean = math.fsum(values) / len(values)
        return Reading((mean,), format_fixed6(mean), response.body)


@dataclass
class _AccessToken:
    value: str
    expires: float


def _client_credentials(secret: str) -> tuple[str, str]:
    parts = secret.split(".")
    if not secret.startswith(_TOKEN_PREFIX):
        raise ProviderError(
            f"the Dynatrace OAuth secret does not start with the required prefix {_TOKEN_PREFIX}"
        )
    if len(parts) != 3:
        raise ProviderError("the Dynatrace OAuth secret does not have three dot-separated parts")
    if len(parts[2]) != 64:
        raise ProviderError("the secret part of the Dynatrace OAuth secret is not 64 characters")
    return f"{parts[0]}.{parts[1]}", secret


def _list(value: Any) -> list[Any]:
    """``value`` if it is a list; anything else (absent, null, a string) reads as empty."""
    return value if isinstance(value, list) else []


def _numeric(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _record_values(record: dict[str, Any]) -> list[float]:
    arrays = [
        [to_float(v) for v in item if v is not None]
        for item in record.values()
        if isinstance(item, list) and item and all(v is None or _numeric(v) for v in item)
    ]
    if len(arrays) > 1:
        raise ProviderError(TOO_MANY_VALUES)
    if arrays:
        return arrays[0]
    scalars = [to_float(v) for v in record.values() if _numeric(v)]
    if len(scalars) > 1:
        raise ProviderError(TOO_MANY_VALUES)
    return scalars


class DqlProvider:
    """The ``dql`` provider type (Dynatrace Query Language on Grail)."""

    def __init__(
        self,
        transport: Transport,
        secrets: SecretReader,
        *,
        auth_url: str,
        poll_interval: float,
        max_polls: int,
    ) -> None:
        self._transport = transport
        self._secrets = secrets
        self._auth_url = auth_url
        self._poll_interval = poll_interval
        self._max_polls = max_polls
        self._tokens: dict[str, _AccessToken] = {}

    async def _access_token(self, config: ProviderConfig) -> str:
        secret = await _token(self._secrets, config, "Dynatrace token")
        client_id, client_secret = _client_credentials(secret)
        auth_url = config.annotations.get(DQL_AUTH_URL_ANNOTATION) or self._auth_url
        # Keyed by a digest of the credentials, so a rotated secret gets a fresh token at once.
        cache_key = hashlib.sha256(f"{auth_url}|{client_secret}".encode()).hexdigest()
        cached = self._tokens.get(cache_key)
        if cached is not None and cached.expires > time.monotonic():
            return cached.value
        response = await self._transport.request(
            config,
            "POST",
            auth_url,
            data={
                "grant_type": "client_credentials",
                "scope": DQL_SCOPES,
                "client_id": client_id,
                "client_secret": client_secret,
            },
        )
        if response.status >= 300:
            raise ProviderError(
                f"could not retrieve an OAuth token from {auth_url} (HTTP {response.status})"
            )
        payload = _json(response, config)
        token = payload.get("access_token") if isinstance(payload, dict) else None
        if not isinstance(token, str) or not token:
            raise ProviderError(f"could not retrieve an OAuth token from {auth_url}")
        lifetime = payload.get("expires_in")
        seconds = float(min(lifetime, 10**9)) if _numeric(lifetime) else 300.0
        self._tokens[cache_key] = _AccessToken(token, time.monotonic() + max(seconds - 300, 30))
        return token

    async def fetch(self, config: ProviderConfig, query: Query) -> Reading:
        token = await self._access_token(config)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        body: dict[str, Any] = {
            "query": query.text,
            "timezone": "UTC",
            "locale": "en_US",
            "fetchTimeoutSeconds": 60,
            "requestTimeoutMilliseconds": 1000,
        }
        if query.start is not None:
            body["defaultTimeframeStart"] = query.start.strftime("%Y-%m-%dT%H:%M:%SZ")
            body["defaultTimeframeEnd"] = query.end.strftime("%Y-%m-%dT%H:%M:%SZ")
        base = config.target.rstrip("/") + _DQL_PATH
        response = await self._transport.request(
            config, "POST", base + "execute", json_body=body, headers=headers
        )
        payload = _json(response, config)
        for _ in range(self._max_polls + 1):
            if (error := _api_error(payload)) is not None:
                raise ProviderError(error, raw=response.body)
            if response.status >= 300:
                raise ProviderError(
                    f"{config.type} provider answered HTTP {response.status}", raw=response.body
                )
            if isinstance(payload, dict) and payload.get("state") == "SUCCEEDED":
                result = payload.get("result")
                return self._read(result if isinstance(result, dict) else {}, query, response.body)
            request_token = payload.get("requestToken") if isinstance(payload, dict) else None
            if not isinstance(request_token, str) or not request_token:
                state = payload.get("state") if isinstance(payload, dict) else None
                raise ProviderError(f"DQL query ended in state {state!r}", raw=response.body)
            await asyncio.sleep(self._poll_interval)
            response = await self._transport.request(
                config,
                "GET",
                base + "poll",
                params={"request-token": request_token},
                headers=headers,
            )
            payload = _json(response, config)
            if isinstance(payload, dict) and "requestToken" not in payload:
                payload = {**payload, "requestToken": request_token}
        raise ProviderError("timed out waiting for result of DQL query")

    @staticmethod
    def _read(result: dict[str, Any], query: Query, raw: bytes) -> Reading:
        records = [r for r in _list(result.get("records")) if isinstance(r, dict)]
        if not records:
            raise ProviderError(NO_VALUES, raw=raw)
        if len(records) > 1:
            raise ProviderError(TOO_MANY_VALUES, raw=raw)
        values = _record_values(records[0])
        if not values:
            raise ProviderError(NO_VALUES, raw=raw)
        if query.series:
            return Reading(tuple(values), "", raw)
        return Reading((values[-1],), format_fixed6(values[-1]), raw)
