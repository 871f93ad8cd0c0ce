"""The health and metrics server every service runs: /healthz, /readyz and /metrics.

Liveness only says the event loop answers. Readiness runs the checks the service registered
(watch caches synced, Kafka consumer assigned …) so a rolling update waits for a replica that
can really work. /metrics serves the service's own registry, which is passed in, not global.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[bool] | bool]


@dataclass
class Readiness:
    """Named readiness checks; all must pass for /readyz to answer 200."""

    checks: dict[str, ReadinessCheck] = field(default_factory=dict)

    def add(self, name: str, check: ReadinessCheck) -> None:
        self.checks[name] = check

    async def evaluate(self) -> dict[str, bool]:
        results: dict[str, bool] = {}
        for name, check in self.checks.items():
            try:
                outcome = check()
                results[name] = bool(await outcome if asyncio.iscoroutine(outcome) else outcome)
            except Exception:  # noqa: BLE001 - a failing check means "not ready", never a 500
                _log.exception("readiness check %s raised", name)
                results[name] = False
        return results


@dataclass
class ProbeServer:
    host: str
    port: int
    registry: CollectorRegistry
    readiness: Readiness
    extra_routes: list[web.RouteDef] = field(default_factory=list)
    bound_port: int | None = None
    _started: asyncio.Event = field(default_factory=asyncio.Event)

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, _request: web.Request) -> web.Response:
        results = await self.readiness.evaluate()
        ok = all(results.values())
        return web.json_response(results, status=200 if ok else 503)

    async def _metrics(self, _request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def wait_started(self) -> int:
        await self._started.wait()
        assert self.bound_port is not None
        return self.bound_port

    async def serve(self, stop: asyncio.Event) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        app.add_routes(self.extra_routes)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        server = site._server  # aiohttp exposes the bound socket only here
        sockets = getattr(server, "sockets", None) or []
        self.bound_port = sockets[0].getsockname()[1] if sockets else self.port
        self._started.set()
        try:
            await stop.wait()
        finally:
            await runner.cleanup()
