"""The HTTPS server the apiserver calls: admission and conversion endpoints.

It runs beside the template's plain-HTTP probe server, on its own port (``admission.port``),
with the :class:`~klt_webhook.tls.TlsState` context, so a certificate rotation needs no restart.
It starts listening only once a certificate is loaded: a TLS server without one would fail every
handshake, and the apiserver would see that as the webhook being down.

The handlers here are thin: read the body, call a pure function of :mod:`klt_webhook.reviews`,
encode its answer. A body that is not a review is answered 400 with a message; every other
problem is answered inside a well-formed review. Nothing a client sends makes a 500.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from klt_webhook import registration, reviews
from klt_webhook.settings import AdmissionSettings
from klt_webhook.tls import TlsState

__all__ = ["AdmissionServer", "Handler", "admission_routes"]

_log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _review_outcome(answer: dict[str, Any]) -> str:
    response = answer.get("response") or {}
    if "allowed" in response:
        return "allowed" if response["allowed"] else "denied"
    result = response.get("result") or {}
    return "converted" if result.get("status") == "Success" else "failed"


def _endpoint(name: str, answer: Callable[[Any], dict[str, Any]], requests: Counter) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        try:
            reply = answer(reviews.decode(body))
            text = json.dumps(reply)
        except reviews.BadReview as exc:
            requests.labels(name, "bad_request").inc()
            return web.Response(status=400, text=f"{exc}\n")
        except (ValueError, RecursionError):
            # Only a pathological body (nesting deeper than the encoder recurses) gets here.
            requests.labels(name, "bad_request").inc()
            return web.Response(status=400, text="request body is nested too deeply\n")
        requests.labels(name, _review_outcome(reply)).inc()
        return web.Response(text=text, content_type="application/json")

    return handle


def admission_routes(
    registry: CollectorRegistry, *, mutate_pod: Handler | None
) -> list[web.RouteDef]:
    """``POST /convert``, one ``POST /validate-…`` per validated kind and, when the pod
    mutator is installed, ``POST /mutate-v1-pod``."""
    requests = Counter(
        "klt_webhook_reviews",
        "Admission and conversion reviews answered, by endpoint and outcome.",
        ["endpoint", "outcome"],
        registry=registry,
    )
    routes = [
        web.post(
            registration.CONVERT_PATH,
            _endpoint("convert", reviews.conversion_review, requests),
        )
    ]
    for entry in registration.VALIDATED:

        def validate(review: Any, kind: str = entry.kind) -> dict[str, Any]:
            return reviews.validation_review(review, kind)

        routes.append(web.post(entry.path, _endpoint(entry.kind, validate, requests)))
    if mutate_pod is not None:
        routes.append(web.post(registration.MUTATE_POD_PATH, mutate_pod))
    return routes


class AdmissionServer:
    """The HTTPS server; run :meth:`serve` as a root task."""

    def __init__(
        self, settings: AdmissionSettings, tls: TlsState, routes: list[web.RouteDef]
    ) -> None:
        self._settings = settings
        self._tls = tls
        self._routes = routes
        self.port: int | None = None
        self.started = asyncio.Event()

    async def wait_started(self) -> int:
        await self.started.wait()
        assert self.port is not None
        return self.port

    async def serve(self, stop: asyncio.Event) -> None:
        """Listen once a certificate is loaded; stop (finishing open requests) on ``stop``."""
        waiters = {
            asyncio.ensure_future(self._tls.ready.wait()),
            asyncio.ensure_future(stop.wait()),
        }
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
        if stop.is_set():
            return
        app = web.Application(client_max_size=self._settings.max_body_bytes)
        app.add_routes(self._routes)
        runner = web.AppRunner(
            app,
            handle_signals=False,
            access_log=None,
            keepalive_timeout=self._settings.keepalive_seconds,
        )
        await runner.setup()
        try:
            site = web.TCPSite(
                runner, self._settings.host, self._settings.port, ssl_context=self._tls.context
            )
            await site.start()
            server = site._server  # aiohttp exposes the bound socket only here
            sockets = getattr(server, "sockets", None) or []
            self.port = sockets[0].getsockname()[1] if sockets else self._settings.port
            self.started.set()
            _log.info("admission server listening on %s:%d", self._settings.host, self.port)
            await stop.wait()
        finally:
            await runner.cleanup()
