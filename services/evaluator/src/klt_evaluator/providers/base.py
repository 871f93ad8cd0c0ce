"""What every metrics provider shares: the query, the reading, errors, config and secrets.

A provider turns a :class:`Query` (text plus a time window) into a :class:`Reading` (numbers,
the provider's own rendering of the single value, and the raw answer) or raises
:class:`ProviderError` with a message fit for ``status.errMsg``. Messages never contain secret
values: secrets are read live from the apiserver for every query (Keptn disabled its Secret
cache for the same reason: a rotated credential must work at once) and only ever put into
request headers.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from klt_common.clients import cluster as k8s
from klt_common.structs.api._base import parse_duration
from klt_common.structs.api.metrics import KeptnMetricsProvider

_log = logging.getLogger(__name__)

TYPE_ANNOTATION = "evaluator.klt.sh/provider-type"
"""Overrides ``spec.type``; the only way to select ``http``, since the CRD's pattern for
``spec.type`` (kept as Keptn's) admits only Keptn's provider names."""

TIMEOUT_ANNOTATION = "evaluator.klt.sh/timeout"
"""Per-provider query timeout, a Go duration (``5s``)."""

NO_VALUES = "no values in query result"
TOO_MANY_VALUES = "too many values in query result"


class ProviderError(Exception):
    """A query failed; the message is what ``errMsg`` shows.

    Attributes:
        raw: what the provider answered, if anything (kept, capped, in ``status.rawValue``).
    """

    def __init__(self, message: str, *, raw: bytes = b"") -> None:
        super().__init__(message)
        self.raw = raw


@dataclass(frozen=True)
class Query:
    """One question to a provider."""

    text: str
    """The query in the provider's language (already templated for analyses)."""
    end: datetime
    """End of the window; the evaluation time of an instant query."""
    start: datetime | None = None
    """Start of the window; None asks for an instant value."""
    step: timedelta | None = None
    """Resolution of a range query."""
    step_text: str | None = None
    """``range.step`` as written (Dynatrace takes it verbatim as ``resolution``)."""
    series: bool = False
    """Return every step value (``range.step`` with an aggregation) instead of one value."""
    variables: Mapping[str, str] = field(default_factory=dict)
    """Extra named values some providers use (the generic provider's URL template, Elastic's
    ``metricPath``)."""


@dataclass(frozen=True)
class Reading:
    """A provider's answer."""

    values: tuple[float, ...]
    """One value, or every step value for a series query."""
    text: str
    """The single value as the provider renders it (empty for a series)."""
    raw: bytes
    """The raw answer, for ``status.rawValue``."""


@dataclass(frozen=True)
class ProviderConfig:
    """A KeptnMetricsProvider resolved into what a query needs."""

    name: str
    namespace: str
    type: str
    target: str
    insecure: bool
    timeout: float
    secret_name: str | None
    secret_key: str | None
    annotations: Mapping[str, str]

    @classmethod
    def from_object(
        cls, provider: KeptnMetricsProvider, *, default_timeout: float
    ) -> ProviderConfig:
        meta = provider.metadata
        annotations = meta.annotations or {}
        kind = (annotations.get(TYPE_ANNOTATION) or provider.spec.type or meta.name or "").lower()
        timeout = default_timeout
        if text := annotations.get(TIMEOUT_ANNOTATION):
            try:
                timeout = parse_duration(text).total_seconds()
            except ValueError:
                _log.warning("provider %s/%s: bad %s %r", meta.namespace, meta.name, text, text)
            if timeout <= 0:
                timeout = default_timeout
        ref = provider.spec.secret_key_ref
        return cls(
            name=meta.name or "",
            namespace=meta.namespace or "",
            type=kind,
            target=provider.spec.target_server,
            insecure=provider.spec.insecure_skip_tls_verify,
            timeout=timeout,
            secret_name=(ref.name or "").strip() or None if ref else None,
            secret_key=ref.key if ref else None,
            annotations=annotations,
        )


class SecretReader:
    """Reads Secret data live from the apiserver; never caches, never logs values."""

    def __init__(self, cluster: k8s.ClusterClient) -> None:
        self._cluster = cluster

    async def read(self, name: str, namespace: str) -> dict[str, str]:
        """The Secret's decoded data.

        Raises:
            ProviderError: the Secret does not exist or cannot be read.
        """
        try:
            body = await self._cluster.get(k8s.SECRETS, name, namespace)
        except k8s.NotFound:
            raise ProviderError(f"secret {name!r} not found in namespace {namespace}") from None
        except k8s.Forbidden:
            raise ProviderError(
                f"not allowed to read secret {name!r} in namespace {namespace}"
            ) from None
        except k8s.ApiError as exc:
            raise ProviderError(
                f"could not read secret {name!r}: {exc.status} {exc.reason}"
            ) from None
        data: dict[str, str] = {}
        for key, encoded in (body.get("data") or {}).items():
            try:
                data[key] = base64.b64decode(encoded).decode()
            except (ValueError, UnicodeDecodeError):
                _log.warning("secret %s/%s: key %s is not UTF-8 text", namespace, name, key)
        for key, text in (body.get("stringData") or {}).items():
            data.setdefault(key, str(text))
        return data


class Provider(Protocol):
    """A metrics backend kind (prometheus, dynatrace, …)."""

    async def fetch(self, config: ProviderConfig, query: Query) -> Reading:
        """Answer ``query``; raise :class:`ProviderError` with a readable message on failure."""
        ...


def to_float(value: float) -> float:
    """``float(value)`` for a number from a provider's JSON; an integer beyond the float range
    (JSON allows any number of digits) is a readable error, not an OverflowError."""
    try:
        return float(value)
    except OverflowError:
        raise ProviderError("the provider answered a number beyond the float range") from None


def single(values: list[float]) -> float:
    """The one value of a result that must have exactly one."""
    if not values:
        raise ProviderError(NO_VALUES)
    if len(values) > 1:
        raise ProviderError(TOO_MANY_VALUES)
    return values[0]
