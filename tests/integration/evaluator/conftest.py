"""Fixtures for the evaluator: a real Prometheus, an exporter the tests control, the service.

- ``exporter`` (session): an aiohttp server on 127.0.0.1 serving Prometheus text format. Tests
  set gauges on it (``exporter.set("name", 3.0, job="x")``) and read them back through PromQL.
- ``prometheus`` (session): Debian's ``prometheus`` binary (installed by ``klt dev build``),
  started here with a temporary data dir on a free loopback port, scraping the exporter every
  second. Stopped at the end of the session.
- ``evaluator``: starts the evaluator in-process with ``serve(...)``, isolated from the stack's
  own evaluator by a shard of its own (``KLT_EVALUATOR__SHARD``): every KeptnMetric, KeptnEvaluation
  and Analysis a test creates carries ``evaluator.klt.sh/shard: <shard>``, which the stack's
  evaluator (shard "") never selects. Its own topic prefix keeps its events apart too.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from evaluator_kit import (
    SCRAPE_INTERVAL,
    Exporter,
    FinishedEvents,
    PrometheusServer,
    RunningEvaluator,
    StartEvaluator,
    free_port,
)
from prometheus_client import CollectorRegistry

from klt_common.clients import bus
from klt_common.configs.settings import (
    BusSettings,
    ClusterSettings,
    ObservabilitySettings,
    ShutdownSettings,
)
from klt_common.service import serve
from klt_common.structs import events
from klt_evaluator.app import setup
from klt_evaluator.settings import EvaluatorGroup, EvaluatorSettings

# --- the exporter ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
async def exporter() -> AsyncIterator[Exporter]:
    exporter = Exporter(port=free_port())
    app = web.Application()
    app.router.add_get("/metrics", exporter.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", exporter.port)
    await site.start()
    yield exporter
    await runner.cleanup()


# --- prometheus --------------------------------------------------------------------------------


def _prometheus_binary() -> str:
    from klt_cli.devstack import build, paths

    for candidate in (
        shutil.which("prometheus"),
        str(paths.bin_dir(paths.cache_dir()) / "prometheus"),
        "/usr/bin/prometheus",
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    build.build_all()  # installs it (apt-get) when missing, like `klt dev build`
    return "/usr/bin/prometheus"


@pytest.fixture(scope="session")
async def prometheus(exporter: Exporter) -> AsyncIterator[PrometheusServer]:
    binary = _prometheus_binary()
    workdir = Path(tempfile.mkdtemp(prefix="klt-prometheus-"))
    config = workdir / "prometheus.yml"
    config.write_text(
        "global:\n"
        f"  scrape_interval: {SCRAPE_INTERVAL}\n"
        f"  evaluation_interval: {SCRAPE_INTERVAL}\n"
        "scrape_configs:\n"
        "  - job_name: exporter\n"
        "    static_configs:\n"
        f"      - targets: ['127.0.0.1:{exporter.port}']\n"
    )
    port = free_port()
    log = (workdir / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1h",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    server = PrometheusServer(f"http://127.0.0.1:{port}", process)
    try:
        exporter.set("klt_fixture_ready", 1.0)
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"prometheus exited with {process.returncode}: "
                    f"{(workdir / 'prometheus.log').read_text(errors='replace')[-2000:]}"
                )
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with (
                    aiohttp.ClientSession() as http,
                    http.get(f"{server.url}/-/ready") as response,
                ):
                    if response.status == 200:
                        break
            if time.monotonic() > deadline:
                raise RuntimeError("prometheus did not become ready in 60 s")
            await asyncio.sleep(0.2)
        await server.wait_for("klt_fixture_ready", 1.0, timeout=60)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


# --- the evaluator -----------------------------------------------------------------------------


@pytest.fixture
def shard() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def evaluator(
    bus_settings: BusSettings,
    cluster_settings: ClusterSettings,
    namespace: str,
    shard: str,
) -> AsyncIterator[StartEvaluator]:
    """A factory: ``await evaluator(**evaluator_group_overrides)`` starts one evaluator.

    Each call starts a new incarnation with the same shard (tests restart it this way); all are
    stopped at the end of the test.
    """
    started: list[RunningEvaluator] = []

    async def start(*, klt_namespace: str | None = None, **overrides: Any) -> RunningEvaluator:
        group = EvaluatorGroup(
            shard=shard,
            consumer_group=f"klt-evaluator-{shard}",
            definition_retry_seconds=overrides.pop("definition_retry_seconds", 1.0),
            analysis_retry_seconds=overrides.pop("analysis_retry_seconds", 1.0),
            status_retry_seconds=overrides.pop("status_retry_seconds", 0.5),
            dql_poll_interval_seconds=overrides.pop("dql_poll_interval_seconds", 0.05),
            **overrides,
        )
        settings = EvaluatorSettings(
            bus=bus_settings,
            cluster=cluster_settings.model_copy(
                update={"namespace": klt_namespace or cluster_settings.namespace}
            ),
            observability=ObservabilitySettings(http_host="127.0.0.1", http_port=0, log_json=False),
            shutdown=ShutdownSettings(grace_seconds=5),
            evaluator=group,
        )
        stop = asyncio.Event()
        registry = CollectorRegistry()
        port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(
            serve(settings, setup, stop=stop, registry=registry, on_ready=port.set_result)
        )
        done, _ = await asyncio.wait({task, port}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()
        running = RunningEvaluator(shard, await port, registry, stop, task, settings)
        started.append(running)
        # Ready means every watch cache has listed once.
        deadline = time.monotonic() + 60
        while (await running.get("/readyz"))[0] != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("the evaluator did not become ready in 60 s")
            await asyncio.sleep(0.1)
        return running

    yield start
    for running in started:
        if not running.task.done():
            await running.close()


@pytest.fixture
async def finished(bus_settings: BusSettings) -> AsyncIterator[FinishedEvents]:
    """Every ``evaluation.finished`` published on this test's topics, as it arrives."""
    await bus.ensure_topics(bus_settings, list(events.Topic))
    collected = FinishedEvents()
    consumer = bus.Consumer(
        bus_settings, group_id=f"observer-{uuid.uuid4().hex[:8]}", client_id="observer"
    )

    async def on_finished(
        envelope: events.Envelope[events.EvaluationFinished], _where: bus.Coordinates
    ) -> None:
        collected.envelopes.append(envelope)

    consumer.register(events.EvaluationFinished, on_finished)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    yield collected
    stop.set()
    await asyncio.wait_for(task, 30)
