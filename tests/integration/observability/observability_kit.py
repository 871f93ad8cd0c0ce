"""Helpers for the observability tests: run a service on the template in-process, scrape its
``/metrics`` over HTTP and read the exposition with ``prometheus_client``'s own parser."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from klt_common.configs.settings import ServiceSettings
from klt_common.service import ServiceContext, serve

T = TypeVar("T")
S = TypeVar("S", bound=ServiceSettings)


@dataclass
class Running:
    """A service started by ``running``: its port, registry and template context."""

    port: int
    registry: CollectorRegistry
    context: ServiceContext[Any]


@contextlib.asynccontextmanager
async def running(
    settings: S,
    setup: Callable[[ServiceContext[S]], Awaitable[None]],
    *,
    tracer_provider: TracerProvider | None = None,
) -> AsyncIterator[Running]:
    """Serve ``setup`` on the template until the block ends, then stop it and wait for it."""
    stop = asyncio.Event()
    registry = CollectorRegistry()
    ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    holder: dict[str, ServiceContext[S]] = {}

    async def wrapped(context: ServiceContext[S]) -> None:
        holder["context"] = context
        await setup(context)

    def announce(port: int) -> None:
        if not ready.done():
            ready.set_result(port)

    task = asyncio.create_task(
        serve(
            settings,
            wrapped,
            stop=stop,
            registry=registry,
            tracer_provider=tracer_provider,
            on_ready=announce,
        ),
        name=f"{settings.service_name}-under-test",
    )
    started: set[asyncio.Future[Any]] = {task, ready}
    done, _ = await asyncio.wait(started, timeout=60, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    assert ready in done, f"{settings.service_name} did not start"
    try:
        yield Running(ready.result(), registry, holder["context"])
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


Samples = list[tuple[str, dict[str, str], float]]


async def scrape(port: int) -> Samples:
    """GET /metrics and parse it: every sample as (name, labels, value)."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        assert response.status == 200
        text = await response.text()
    return [
        (sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(
        value
        for sample_name, sample_labels, value in samples
        if sample_name == name and labels.items() <= sample_labels.items()
    )


def series(samples: Samples, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
    return [
        (sample_labels, value)
        for sample_name, sample_labels, value in samples
        if sample_name == name and labels.items() <= sample_labels.items()
    ]


async def eventually(
    probe: Callable[[], Awaitable[T | None]], *, timeout: float = 60, what: str = "condition"
) -> T:
    """Poll ``probe`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
