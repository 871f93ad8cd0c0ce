"""The generic HTTP/JSON provider (``http``): any JSON endpoint, a JSONPath to the value.

Asked for in keptn#745 (a KEDA ``metrics-api``-style provider) and never built in Keptn. Select it
with the annotation ``evaluator.klt.sh/provider-type: http`` on the KeptnMetricsProvider (the
CRD's pattern for ``spec.type`` only admits Keptn's names); ``targetServer`` is the base URL.

The query is ``<url> <jsonpath>``, separated by the first whitespace::

    query: "/api/v1/stats?service={{.service}}&since={{.from}} $.latency.p95"

- ``<url>`` is relative to ``targetServer`` (an absolute URL must have the same origin, so
  credentials never travel to another host). It is a query template (docs/evaluator.md) with
  ``{{.from}}``/``{{.to}}`` (epoch seconds of the window; both "now" without a range),
  ``{{.fromISO}}``/``{{.toISO}}`` (RFC 3339), ``{{.interval}}`` and ``{{.step}}`` (as written
  in ``range``), and for analyses every ``spec.args`` entry.
- ``<jsonpath>`` (jsonpath-ng, with its filter extensions) must match exactly one number, or a
  string holding one. With ``range.step`` every match is a step value (a matched array counts
  as its elements).
- ``GET``, ``Accept: application/json``. With ``secretKeyRef`` the secret value is sent as
  ``Authorization: Bearer <value>``; the annotation ``evaluator.klt.sh/auth-header: X-Api-Key``
  sends it verbatim in that header instead.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urljoin

from jsonpath_ng import JSONPath
from jsonpath_ng.exceptions import JSONPathError
from jsonpath_ng.ext.parser import parse as parse_jsonpath

from klt_evaluator import gotemplate
from klt_evaluator.numbers import format_plain, parse_number
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
from klt_evaluator.providers.transport import Transport, origin_of

AUTH_HEADER_ANNOTATION = "evaluator.klt.sh/auth-header"
_SPLIT = re.compile(r"\s+")
SYNTAX_HELP = "the http provider's query is '<url> <jsonpath>', e.g. '/api/stats $.latency.p95'"


@functools.lru_cache(maxsize=1024)
def compile_path(path: str) -> JSONPath:
    """Compile (and cache) a JSONPath expression."""
    try:
        return parse_jsonpath(path)
    except (JSONPathError, ValueError, TypeError) as exc:
        raise ProviderError(f"invalid JSONPath {path!r}: {exc}") from None


def split_query(text: str) -> tuple[str, str]:
    """``(url template, jsonpath)`` of a generic-provider query."""
    parts = _SPLIT.split(text.strip(), maxsplit=1)
    if len(parts) != 2 or not parts[1].strip():
        raise ProviderError(SYNTAX_HELP)
    return parts[0], parts[1].strip()


def _as_number(value: Any, path: str) -> float:
    if isinstance(value, bool) or value is None:
        raise ProviderError(f"the value at {path} is not a number")
    if isinstance(value, int | float):
        return to_float(value)
    if isinstance(value, str):
        try:
            return parse_number(value)
        except ValueError:
            raise ProviderError(f"the value at {path} ({value[:40]!r}) is not a number") from None
    raise ProviderError(f"the value at {path} is not a number")


def select(document: Any, path: str, *, series: bool) -> list[float]:
    """The numbers ``path`` selects in ``document``."""
    matches = [match.value for match in compile_path(path).find(document)]
    if series:
        flat: list[Any] = []
        for item in matches:
            flat.extend(item if isinstance(item, list) else [item])
        matches = flat
    if not matches:
        raise ProviderError(NO_VALUES)
    if not series and len(matches) > 1:
        raise ProviderError(TOO_MANY_VALUES)
    return [_as_number(item, path) for item in matches]


def window_variables(query: Query) -> dict[str, str]:
    start = query.start or query.end
    return {
        "from": str(int(start.timestamp())),
        "to": str(int(query.end.timestamp())),
        "fromISO": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "toISO": query.end.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


class GenericProvider:
    """The ``http`` provider type."""

    def __init__(self, transport: Transport, secrets: SecretReader) -> None:
        self._transport = transport
        self._secrets = secrets

    async def _headers(self, config: ProviderConfig) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if config.secret_name:
            data = await self._secrets.read(config.secret_name, config.namespace)
            token = data.get(config.secret_key or "", "")
            if not token:
                raise ProviderError(
                    f"secret {config.secret_name!r} contains no key {config.secret_key!r}"
                )
            header = config.annotations.get(AUTH_HEADER_ANNOTATION)
            if header:
                headers[header] = token.strip()
            else:
                headers["Authorization"] = f"Bearer {token.strip()}"
        return headers

    def _url(self, config: ProviderConfig, template: str, variables: Mapping[str, str]) -> str:
        try:
            rendered = gotemplate.render(template, variables)
        except gotemplate.TemplateError as exc:
            raise ProviderError(f"URL template: {exc}") from None
        base = config.target if config.target.endswith("/") else config.target + "/"
        url = urljoin(base, rendered.lstrip("/")) if not rendered.startswith("http") else rendered
        if origin_of(url) != origin_of(config.target):
            target = origin_of(config.target)
            raise ProviderError(f"the query URL must stay on the provider's target ({target})")
        return url

    async def fetch(self, config: ProviderConfig, query: Query) -> Reading:
        template, path = split_query(query.text)
        compile_path(path)
        variables = {**window_variables(query), **query.variables}
        url = self._url(config, template, variables)
        response = await self._transport.request(
            config, "GET", url, headers=await self._headers(config)
        )
        if response.status >= 300:
            snippet = response.body[:200].decode(errors="replace")
            raise ProviderError(
                f"{config.type} provider answered HTTP {response.status}: {snippet}",
                raw=response.body,
            )
        try:
            document = json.loads(response.body)
        except ValueError:
            raise ProviderError("the answer is not JSON", raw=response.body) from None
        try:
            values = select(document, path, series=query.series)
        except ProviderError as exc:
            raise ProviderError(str(exc), raw=response.body) from None
        if query.series:
            return Reading(tuple(values), "", response.body)
        return Reading((values[0],), format_plain(values[0]), response.body)
