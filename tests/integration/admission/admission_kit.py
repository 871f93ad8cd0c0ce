"""Runs a webhook service in a thread of its own, reachable over plain HTTP.

The admission logic is exercised here the way the apiserver exercises it (an AdmissionReview
per request) but without TLS or webhook registration, which tests/integration/webhook covers;
that keeps these tests about decisions. A thread (with its own event loop) lets synchronous
hypothesis tests and async tests use the same running service.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from dataclasses import dataclass

from aiohttp import web

from klt_common.configs.settings import (
    BusSettings,
    ClusterSettings,
    ObservabilitySettings,
    ShutdownSettings,
)
from klt_common.service import ServiceContext, serve
from klt_webhook.mutate import PodMutator
from klt_webhook.settings import PodAdmissionSettings, WebhookSettings


@dataclass
class RunningWebhook:
    url: str
    bus: BusSettings
    mutator: PodMutator


def start_webhook(
    kafka_bootstrap: str,
    cluster_settings: ClusterSettings,
    pods: PodAdmissionSettings,
    *,
    publish: bool = True,
) -> tuple[RunningWebhook, threading.Thread, asyncio.AbstractEventLoop, asyncio.Event]:
    bus = BusSettings(
        bootstrap_servers=kafka_bootstrap, topic_prefix=f"t{uuid.uuid4().hex[:10]}.", partitions=3
    )
    settings = WebhookSettings(
        bus=bus,
        cluster=cluster_settings,
        observability=ObservabilitySettings(http_host="127.0.0.1", http_port=0, log_json=False),
        shutdown=ShutdownSettings(grace_seconds=5),
        pods=pods,
    )
    ready = threading.Event()
    holder: dict[str, object] = {}

    async def setup(context: ServiceContext[WebhookSettings]) -> None:
        if publish:
            mutator = PodMutator.attach(context)
        else:
            # No publish loop: the queue fills as if Kafka were unreachable for good.
            mutator = PodMutator(context, context.settings.pods)
            for cache in (
                mutator.namespaces,
                mutator.replicasets,
                mutator.deployments,
                mutator.statefulsets,
                mutator.daemonsets,
                mutator.workload_versions,
            ):
                context.watch(cache)
        context.routes.append(web.post("/mutate-v1-pod", mutator.handle))
        holder["mutator"] = mutator

    def run() -> None:
        loop = asyncio.new_event_loop()
        holder["loop"] = loop
        stop = asyncio.Event()
        holder["stop"] = stop

        def on_ready(port: int) -> None:
            holder["port"] = port
            ready.set()

        try:
            loop.run_until_complete(serve(settings, setup, stop=stop, on_ready=on_ready))
        finally:
            # Give closed connections a turn of the loop to finish closing (TLS transports need
            # one), so no socket is left for the garbage collector after this thread ends.
            loop.run_until_complete(asyncio.sleep(0.25))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    thread = threading.Thread(target=run, name="webhook-under-test", daemon=True)
    thread.start()
    if not ready.wait(60):
        raise AssertionError("the webhook service did not start")
    mutator = holder["mutator"]
    assert isinstance(mutator, PodMutator)
    loop = holder["loop"]
    stop = holder["stop"]
    assert isinstance(loop, asyncio.AbstractEventLoop)
    assert isinstance(stop, asyncio.Event)
    # Admission decisions read the caches; wait until they hold the cluster's state.
    asyncio.run_coroutine_threadsafe(mutator.namespaces.wait_synced(30), loop).result(35)
    running = RunningWebhook(f"http://127.0.0.1:{holder['port']}/mutate-v1-pod", bus, mutator)
    return running, thread, loop, stop
