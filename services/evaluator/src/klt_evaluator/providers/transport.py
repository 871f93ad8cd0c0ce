"""HTTP for providers: one aiohttp session per provider target, and a request helper.

A *target* is a provider's origin (scheme, host, port) together with its TLS choice. All
queries to one target share one session and so one connection pool: a thousand metrics on one
Prometheus reuse a few keep-alive connections instead of opening one per query (Keptn built a
new HTTP client per reconcile). Sessions unused for ``idle_session_seconds`` are closed by
``sweep``, so deleted providers do not leak connections.

``request`` turns every transport failure into a :class:`ProviderError` whose message names the
target and the cause (refused, timed out, TLS) and never includes request headers, which is
where credentials go.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from klt_evaluator.providers.base import ProviderConfig, ProviderError

_log = logging.getLogger(__name__)


def origin_of(url: str) -> str:
    """``scheme://host:port`` of a URL (the session key)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ProviderError(f"targetServer {url!r} is not an http(s) URL")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}:{port}"


@dataclass
class _Entry:
    session: aiohttp.ClientSession
    last_used: float


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str


class Transport:
    """The provider sessions of one evaluator process."""

    def __init__(
        self, *, connections_per_target: int, max_response_bytes: int, idle_seconds: float
    ) -> None:
        self._connections = connections_per_target
        self._max_bytes = max_response_bytes
        self._idle = idle_seconds
        self._sessions: dict[tuple[str, bool], _Entry] = {}

    def _session(self, url: str, insecure: bool) -> aiohttp.ClientSession:
        key = (origin_of(url), insecure)
        entry = self._sessions.get(key)
        now = time.monotonic()
        if entry is None or entry.session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._connections, ssl=not insecure, ttl_dns_cache=60
            )
            entry = _Entry(aiohttp.ClientSession(connector=connector, raise_for_status=False), now)
            self._sessions[key] = entry
        entry.last_used = now
        return entry.session

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    async def request(
        self,
        config: ProviderConfig,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        data: Mapping[str, str] | bytes | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Response:
        """Send one request to ``config``'s target; transport failures become ProviderError."""
        session = self._session(url, config.insecure)
        limit = timeout if timeout is not None else config.timeout
        where = origin_of(url)
        try:
            async with session.request(
                method,
                url,
                params=params,
                data=data,
                json=json_body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=limit),
            ) as response:
                body = await response.content.read(self._max_bytes + 1)
                if len(body) > self._max_bytes:
                    raise ProviderError(
                        f"{config.type} provider at {where} answered more than "
                        f"{self._max_bytes} bytes; narrow the query"
                    )
                return Response(response.status, body, response.content_type)
        except TimeoutError:
            raise ProviderError(
                f"{config.type} provider at {where} did not answer within {limit:g}s"
            ) from None
        except aiohttp.ClientSSLError as exc:
            raise ProviderError(
                f"TLS error talking to {config.type} provider at {where}: {exc.__class__.__name__}"
                " (check the server's certificate; insecureSkipTlsVerify turns verification off)"
            ) from None
        except aiohttp.ClientConnectorError as exc:
            cause = exc.os_error.strerror if exc.os_error and exc.os_error.strerror else str(exc)
            raise ProviderError(
                f"cannot reach {config.type} provider at {where}: {cause}"
            ) from None
        except aiohttp.ClientError as exc:
            raise ProviderError(
                f"request to {config.type} provider at {where} failed: {exc.__class__.__name__}"
                f"{': ' + str(exc) if str(exc) else ''}"
            ) from None

    async def sweep(self) -> None:
        """Close sessions idle for longer than ``idle_seconds``."""
        cutoff = time.monotonic() - self._idle
        for key, entry in list(self._sessions.items()):
            if entry.last_used < cutoff:
                del self._sessions[key]
                await entry.session.close()
                _log.debug("closed idle provider session %s", key[0])

    async def run_sweeper(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=max(self._idle / 4, 1.0))
            except TimeoutError:
                await self.sweep()

    async def close(self) -> None:
        sessions, self._sessions = self._sessions, {}
        for entry in sessions.values():
            await entry.session.close()
