"""The one template every klt service runs on.

settings → clients → handlers → supervised loops → staged shutdown:

1. the entry point builds the service's settings object once and calls ``run_service``;
2. ``serve`` opens the clients (cluster client, bus publisher), creates the catalogue's topics,
   and builds a ``ServiceContext``;
3. the service's ``setup`` registers what it does on that context: bus handlers (each group a
   ``Consumer``), watch caches, reconcile loops, readiness checks, extra HTTP routes;
4. every loop then runs as a named, supervised root task beside the probe server; SIGTERM or
   SIGINT only sets the stop event, and the first root task to end (crash included) stops the
   others;
5. shutdown is staged: consumers stop fetching, finish in-flight records and commit (within
   ``shutdown.grace_seconds``), then the service's own closers run, then the publisher flushes,
   and the clients close last.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from aiohttp import web
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from klt_common.aiokits.tasks import RootTask, run_until_stopped
from klt_common.clients.bus import Consumer, Publisher, ensure_topics
from klt_common.clients.cluster import ClusterClient, WatchCache
from klt_common.configs.settings import ServiceSettings
from klt_common.observability.bus_metrics import BusMetrics
from klt_common.observability.http import ProbeServer, Readiness
from klt_common.observability.logs import setup_logging
from klt_common.observability.tracing import install_global, make_tracer_provider
from klt_common.structs import events

S = TypeVar("S", bound=ServiceSettings)

_log = logging.getLogger(__name__)


@dataclass
class ServiceContext(Generic[S]):
    """What a service's ``setup`` gets: its settings, its clients, and places to register."""

    settings: S
    stop: asyncio.Event
    cluster: ClusterClient
    publisher: Publisher
    registry: CollectorRegistry
    tracer: trace.Tracer
    bus_metrics: BusMetrics
    """The bus instruments on ``registry``; pass them to any consumer built outside
    ``consumer`` (a raw one, say) so that it reports like the others."""
    readiness: Readiness = field(default_factory=Readiness)
    roots: list[RootTask] = field(default_factory=list)
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    routes: list[web.RouteDef] = field(default_factory=list)
    _caches: list[WatchCache] = field(default_factory=list)

    @property
    def source(self) -> str:
        """The CloudEvents ``source`` of everything this service publishes."""
        return f"/klt/{self.settings.service_name}"

    @property
    def instance(self) -> str:
        return self.settings.instance_id or socket.gethostname()

    def loop(self, name: str, factory: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``factory()`` as a supervised root task; it must return when ``stop`` is set."""
        self.roots.append(RootTask(name, factory))

    def consumer(self, group: str) -> Consumer:
        """A consumer-group member for ``group``; register handlers on it before start-up.

        It joins its group only once every watch cache registered with ``watch`` has synced,
        so handlers can rely on the caches holding the cluster's state.
        """
        consumer = Consumer(
            self.settings.bus, group_id=group, client_id=self.instance, metrics=self.bus_metrics
        )

        async def consume() -> None:
            for cache in self._caches:
                await cache.wait_synced()
            await consumer.run(self.stop)

        self.roots.append(RootTask(f"consume:{group}", consume))
        return consumer

    def watch(
        self,
        cache: WatchCache,
    ) -> WatchCache:
        """Keep ``cache`` current as a root task; the service is not ready until it synced."""
        self._caches.append(cache)
        self.roots.append(RootTask(f"watch:{cache.resource.plural}", lambda: cache.run(self.stop)))
        self.readiness.add(f"cache:{cache.resource.plural}", lambda: cache.synced)
        return cache


Setup = Callable[[ServiceContext[S]], Awaitable[None]]


async def serve(
    settings: S,
    setup: Setup[S],
    *,
    stop: asyncio.Event | None = None,
    registry: CollectorRegistry | None = None,
    tracer_provider: TracerProvider | None = None,
    on_ready: Callable[[int], None] | None = None,
) -> None:
    """Run one service until it is stopped. Tests call this directly with their own stop event,
    registry and tracer provider; processes go through ``run_service``."""
    stop = stop or asyncio.Event()
    registry = registry or CollectorRegistry()
    provider = tracer_provider or make_tracer_provider(
        settings.service_name, otlp_endpoint=settings.observability.otlp_endpoint
    )
    bus_metrics = BusMetrics(registry)
    cluster = await ClusterClient.connect(settings.cluster)
    publisher = Publisher(
        settings.bus,
        client_id=f"{settings.service_name}-{socket.gethostname()}",
        metrics=bus_metrics,
    )
    context: ServiceContext[S] | None = None
    try:
        # Every service creates the whole catalogue's topics (idempotently), so install order
        # does not matter and no consumer starts on a topic that does not exist yet.
        await ensure_topics(settings.bus, list(events.Topic), stop=stop)
        await publisher.start(stop=stop)
        context = ServiceContext(
            settings=settings,
            stop=stop,
            cluster=cluster,
            publisher=publisher,
            registry=registry,
            tracer=provider.get_tracer(f"klt/{settings.service_name}"),
            bus_metrics=bus_metrics,
        )
        await setup(context)
        probes = ProbeServer(
            settings.observability.http_host,
            settings.observability.http_port,
            registry,
            context.readiness,
            extra_routes=context.routes,
        )
        roots = [RootTask("probes", lambda: probes.serve(stop)), *context.roots]

        async def announce() -> None:
            port = await probes.wait_started()
            _log.info("%s serving probes on port %d", settings.service_name, port)
            if on_ready is not None:
                on_ready(port)

        announcer = asyncio.create_task(announce(), name="announce")
        try:
            await run_until_stopped(roots, stop=stop, stop_timeout=settings.shutdown.grace_seconds)
        finally:
            announcer.cancel()
            await asyncio.gather(announcer, return_exceptions=True)
    finally:
        if context is not None:
            for closer in reversed(context.closers):
                try:
                    await closer()
                except Exception:  # noqa: BLE001 - one failing closer must not skip the rest
                    _log.exception("closing %s failed", closer)
        await publisher.stop()
        await cluster.close()
        if tracer_provider is None:
            provider.shutdown()


def run_service(settings: S, setup: Setup[S]) -> None:
    """Process entry point: logging, global tracing, signal handling, then ``serve``."""
    setup_logging(
        settings.service_name,
        level=settings.observability.log_level,
        json_lines=settings.observability.log_json,
    )
    provider = make_tracer_provider(
        settings.service_name, otlp_endpoint=settings.observability.otlp_endpoint
    )
    install_global(provider)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings, setup, stop=stop, tracer_provider=provider)

    try:
        asyncio.run(main())
    finally:
        provider.shutdown()
