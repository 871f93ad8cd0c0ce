"""A fault-injecting reverse proxy between a service and the stack's kube-apiserver.

The proxy listens on plain HTTP on 127.0.0.1 and forwards to the apiserver over TLS (verified
with the dev CA); the client's bearer token passes through unchanged, so the apiserver still
authenticates and authorises the real caller. Watches are streamed through untouched. Other
requests are answered, with a seeded random choice, by:

- ``conflict``: 409 Conflict without forwarding (a PUT or PATCH lost an optimistic-concurrency
  race, as when another writer got there first);
- ``unavailable``: 503 without forwarding (an apiserver that is shedding load);
- ``lost-response``: forwarded, then a 500 instead of the real answer (the write happened, but
  the caller cannot know it: an etcd timeout after commit, a connection reset on the way back);
- ``read-error``: 500 for a GET, without forwarding.

Every injected fault is counted by kind, so the test can show that the faults really happened
and that the callers retried them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import ssl
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
}


def _status(code: int, reason: str, message: str) -> web.Response:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    return web.Response(status=code, text=json.dumps(body), content_type="application/json")


@dataclass
class FaultRates:
    conflict: float = 0.15
    """Share of PUT and PATCH requests answered 409 without being forwarded."""
    unavailable: float = 0.10
    """Share of mutating requests answered 503 without being forwarded."""
    lost_response: float = 0.05
    """Share of mutating requests forwarded, then answered 500."""
    read_error: float = 0.05
    """Share of plain GETs (not watches) answered 500 without being forwarded."""


@dataclass
class FaultProxy:
    upstream: str
    ca_file: Path
    rates: FaultRates = field(default_factory=FaultRates)
    seed: int = 0
    injected: Counter[str] = field(default_factory=Counter)
    forwarded: Counter[str] = field(default_factory=Counter)
    enabled: bool = True
    port: int = 0
    _runner: web.AppRunner | None = None
    _session: aiohttp.ClientSession | None = None

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        tls = ssl.create_default_context(cafile=str(self.ca_file))
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=tls, limit=200),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            auto_decompress=False,
        )
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=2.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]

    async def close(self) -> None:
        # The client session first: it ends the upstream watch streams that handlers are still
        # relaying, so that the server's cleanup does not wait for them.
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def _fault(self, request: web.Request) -> str | None:
        if not self.enabled:
            return None
        method = request.method
        draw = self._rng.random()
        if method == "GET":
            return "read-error" if draw < self.rates.read_error else None
        if method in ("PUT", "PATCH"):
            if draw < self.rates.conflict:
                return "conflict"
            draw -= self.rates.conflict
        if method in ("POST", "PUT", "PATCH", "DELETE"):
            if draw < self.rates.unavailable:
                return "unavailable"
            draw -= self.rates.unavailable
            if draw < self.rates.lost_response:
                return "lost-response"
        return None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        watch = request.query.get("watch") in ("true", "1")
        fault = None if watch else self._fault(request)
        if fault is not None:
            self.injected[fault] += 1
        if fault == "conflict":
            return _status(
                409,
                "Conflict",
                "Operation cannot be fulfilled: the object has been modified (injected)",
            )
        if fault == "unavailable":
            return _status(503, "ServiceUnavailable", "injected: the apiserver is unavailable")
        if fault == "read-error":
            return _status(500, "InternalError", "injected: read failed")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        body = await request.read()
        upstream = await self._session.request(
            request.method,
            f"{self.upstream}{request.rel_url}",
            headers=headers,
            data=body if body else None,
            allow_redirects=False,
        )
        self.forwarded[request.method] += 1
        try:
            if fault == "lost-response":
                await upstream.read()
                return _status(500, "InternalError", "injected: the response was lost")
            reply_headers = {
                k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP
            }
            if not watch:
                payload = await upstream.read()
                return web.Response(status=upstream.status, body=payload, headers=reply_headers)
            response = web.StreamResponse(status=upstream.status, headers=reply_headers)
            await response.prepare(request)
            # Ends when either side goes: the apiserver closes the watch, or the client does (a
            # write then fails), or the proxy closes.
            with contextlib.suppress(aiohttp.ClientError, ConnectionResetError):
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
            return response
        finally:
            upstream.release()


def proxy_kubeconfig(source: Path, proxy_url: str, target: Path) -> Path:
    """A copy of ``source`` (the stack's kubeconfig) whose cluster is the proxy."""
    config: dict[str, Any] = yaml.safe_load(source.read_text())
    for cluster in config.get("clusters") or []:
        cluster["cluster"] = {"server": proxy_url}
    target.write_text(yaml.safe_dump(config, sort_keys=False))
    target.chmod(0o600)
    return target


class ProxyThread:
    """A FaultProxy on an event loop of its own thread.

    The test session's loop runs only while an async test or fixture is awaiting; a proxy there
    would stop answering the services during every synchronous test. On its own thread it keeps
    serving for the whole session, and tests switch its faults on and off (``proxy.enabled``).
    """

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="apiserver-fault-proxy", daemon=True
        )

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.proxy.start(), self._loop).result(30)

    def close(self) -> None:
        async def shutdown() -> None:
            await self.proxy.close()
            # Relays of watches the server's cleanup gave up on: ended here, not left for the
            # garbage collector to report as destroyed while pending.
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
