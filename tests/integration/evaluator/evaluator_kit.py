"""Helpers for the evaluator's integration tests (the fixtures are in conftest.py)."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import ssl
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry

from klt_common.clients import cluster as k8s
from klt_evaluator.settings import SHARD_LABEL, EvaluatorSettings

SCRAPE_INTERVAL = "1s"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Exporter:
    """Serves whatever gauges the tests set, in Prometheus text format."""

    port: int = 0
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)
    scrapes: int = 0

    def set(self, name: str, value: float, **labels: str) -> None:
        self.samples[(name, tuple(sorted(labels.items())))] = value

    def remove(self, name: str) -> None:
        for key in [k for k in self.samples if k[0] == name]:
            del self.samples[key]

    def render(self) -> str:
        lines: list[str] = []
        seen: set[str] = set()
        for (name, labels), value in sorted(self.samples.items()):
            if name not in seen:
                lines.append(f"# TYPE {name} gauge")
                seen.add(name)
            label_text = ",".join(f'{k}="{v}"' for k, v in labels)
            text = "NaN" if value != value else repr(float(value)).replace("inf", "Inf")
            lines.append(f"{name}{{{label_text}}} {text}" if label_text else f"{name} {text}")
        return "\n".join(lines) + "\n"

    async def handle(self, _request: web.Request) -> web.Response:
        self.scrapes += 1
        return web.Response(text=self.render(), content_type="text/plain")


@dataclass(frozen=True)
class PrometheusServer:
    url: str
    process: subprocess.Popen[bytes]

    async def query(self, promql: str) -> Any:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{self.url}/api/v1/query", params={"query": promql}) as response,
        ):
            return await response.json()

    async def wait_for(self, promql: str, expected: float, timeout: float = 30.0) -> None:
        """Wait until ``promql`` answers one sample equal to ``expected`` (a scrape landed)."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = await self.query(promql)
            result = (last.get("data") or {}).get("result") or []
            if len(result) == 1 and float(result[0]["value"][1]) == expected:
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"prometheus never answered {expected} for {promql}: {last}")


@dataclass
class RunningEvaluator:
    shard: str
    port: int
    registry: CollectorRegistry
    stop: asyncio.Event
    task: asyncio.Task[None]
    settings: EvaluatorSettings

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 30)

    async def get(self, path: str) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as http, http.get(self.url + path) as response:
            if response.content_type == "application/json":
                return response.status, await response.json()
            return response.status, await response.text()


StartEvaluator = Callable[..., Awaitable[RunningEvaluator]]


def labels(shard: str) -> dict[str, str]:
    return {SHARD_LABEL: shard}


async def create(cluster: k8s.ClusterClient, kind: str, body: dict[str, Any]) -> dict[str, Any]:
    return await cluster.create(k8s.keptn_resource(kind), body)


async def wait_until(
    probe: Callable[[], Awaitable[Any]], *, timeout: float = 30.0, interval: float = 0.1
) -> Any:
    """Poll ``probe`` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")


# --- recorded provider answers, served over real HTTP ---------------------------------------------


@dataclass(frozen=True)
class Seen:
    """One request a fake provider received."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    at: float
    """Wall-clock arrival time (``time.time()``)."""


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class FakeProvider:
    """An aiohttp server on 127.0.0.1 that answers like a provider and records what it got."""

    routes: dict[tuple[str, str], Handler] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def on(self, method: str, path: str, handler: Handler) -> None:
        self.routes[(method, path)] = handler

    def answer(self, method: str, path: str, body: Any, status: int = 200) -> None:
        """Answer ``method path`` with a fixed JSON body (a recorded response)."""
        text = body if isinstance(body, str) else json.dumps(body)

        async def handler(_request: web.Request) -> web.Response:
            return web.Response(text=text, status=status, content_type="application/json")

        self.on(method, path, handler)

    def requests_to(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(
            Seen(
                request.method,
                request.path,
                dict(request.query),
                dict(request.headers),
                body,
                time.time(),
            )
        )
        handler = self.routes.get((request.method, request.path))
        if handler is None:
            return web.json_response({"error": f"no route {request.path}"}, status=404)
        return await handler(request)

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> FakeProvider:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=ssl_context).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


async def make_secret(
    cluster: k8s.ClusterClient, namespace: str, name: str, data: dict[str, str]
) -> None:
    await cluster.create(
        k8s.SECRETS,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        },
    )


async def make_provider(
    cluster: k8s.ClusterClient,
    namespace: str,
    name: str,
    url: str,
    *,
    type_: str | None = None,
    annotations: dict[str, str] | None = None,
    **spec: Any,
) -> None:
    body: dict[str, Any] = {
        "apiVersion": "metrics.keptn.sh/v1",
        "kind": "KeptnMetricsProvider",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations or {}},
        "spec": {"targetServer": url, **spec},
    }
    if type_:
        body["spec"]["type"] = type_
    await create(cluster, "KeptnMetricsProvider", body)


async def make_metric(
    cluster: k8s.ClusterClient,
    namespace: str,
    shard: str,
    name: str,
    query: str,
    *,
    provider: str,
    interval: int = 1,
    range_: dict[str, Any] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "provider": {"name": provider},
        "query": query,
        "fetchIntervalSeconds": interval,
    }
    if range_ is not None:
        spec["range"] = range_
    return await create(
        cluster,
        "KeptnMetric",
        {
            "apiVersion": "metrics.keptn.sh/v1",
            "kind": "KeptnMetric",
            "metadata": {"name": name, "namespace": namespace, "labels": labels(shard)},
            "spec": spec,
        },
    )


async def metric_status(cluster: k8s.ClusterClient, namespace: str, name: str) -> dict[str, Any]:
    body = await cluster.get(k8s.keptn_resource("KeptnMetric"), name, namespace)
    return dict(body.get("status") or {})


async def wait_metric(
    cluster: k8s.ClusterClient, namespace: str, name: str, *, timeout: float = 30.0, **expected: Any
) -> dict[str, Any]:
    """Wait until the metric's status has every ``expected`` key/value; return the status."""

    async def probe() -> dict[str, Any] | None:
        status = await metric_status(cluster, namespace, name)
        return status if all(status.get(k) == v for k, v in expected.items()) else None

    result: dict[str, Any] = await wait_until(probe, timeout=timeout)
    return result


# --- lifecycle objects and the bus ------------------------------------------------------------


@dataclass
class FinishedEvents:
    """Collects every ``evaluation.finished`` on the test's topics (a consumer of its own)."""

    envelopes: list[Any] = field(default_factory=list)

    def for_evaluation(self, name: str) -> list[Any]:
        return [e for e in self.envelopes if e.data.evaluation_name == name]


async def static_metric(
    cluster: k8s.ClusterClient, namespace: str, name: str, value: str, err: str | None = None
) -> None:
    """A KeptnMetric whose status the test writes; its shard label keeps every evaluator off it."""
    resource = k8s.keptn_resource("KeptnMetric")
    if await cluster.get_or_none(resource, name, namespace) is None:
        await create(
            cluster,
            "KeptnMetric",
            {
                "apiVersion": "metrics.keptn.sh/v1",
                "kind": "KeptnMetric",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "labels": {SHARD_LABEL: "static-values"},
                },
                "spec": {"provider": {"name": "none"}, "query": "-", "fetchIntervalSeconds": 60},
            },
        )
    status: dict[str, Any] = {"value": value, "rawValue": base64.b64encode(value.encode()).decode()}
    status["errMsg"] = err
    await cluster.patch_status(resource, name, status, namespace)


async def make_definition(
    cluster: k8s.ClusterClient, namespace: str, name: str, objectives: list[tuple[str, str]]
) -> None:
    """A KeptnEvaluationDefinition; objectives are (metric, target), metric may be ns/name."""
    items = []
    for metric, target in objectives:
        ref: dict[str, str] = {"name": metric}
        if "/" in metric:
            ref = {"namespace": metric.split("/")[0], "name": metric.split("/")[1]}
        items.append({"keptnMetricRef": ref, "evaluationTarget": target})
    await create(
        cluster,
        "KeptnEvaluationDefinition",
        {
            "apiVersion": "lifecycle.keptn.sh/v1",
            "kind": "KeptnEvaluationDefinition",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"objectives": items},
        },
    )


async def make_evaluation(
    cluster: k8s.ClusterClient,
    namespace: str,
    shard: str,
    name: str,
    definition: str,
    *,
    retries: int = 10,
    retry_interval: str = "200ms",
    app: str = "shop",
) -> dict[str, Any]:
    return await create(
        cluster,
        "KeptnEvaluation",
        {
            "apiVersion": "lifecycle.keptn.sh/v1",
            "kind": "KeptnEvaluation",
            "metadata": {"name": name, "namespace": namespace, "labels": labels(shard)},
            "spec": {
                "appName": app,
                "appVersion": "1.0.0",
                "workloadVersion": "",
                "evaluationDefinition": definition,
                "checkType": "pre-eval",
                "retries": retries,
                "retryInterval": retry_interval,
            },
        },
    )


async def evaluation(cluster: k8s.ClusterClient, namespace: str, name: str) -> dict[str, Any]:
    return await cluster.get(k8s.keptn_resource("KeptnEvaluation"), name, namespace)


async def wait_evaluation(
    cluster: k8s.ClusterClient, namespace: str, name: str, state: str, timeout: float = 30.0
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        body = await evaluation(cluster, namespace, name)
        return body if (body.get("status") or {}).get("overallStatus") == state else None

    result: dict[str, Any] = await wait_until(probe, timeout=timeout)
    return result
