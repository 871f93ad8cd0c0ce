"""Delivery on the local stack: redelivered events adopt their Jobs instead of starting new
ones, a job executor stopped mid-task hands the event to its next incarnation, binary-mode
events are read, and records that are no CloudEvents go to the dead-letter topic.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from jes_kit import (
    INPUT,
    action,
    configure,
    jobs_of,
    keptn_event,
    outbox,
    publish,
    read_all,
    running,
    settings_for,
    shell_task,
    v2,
)

from klt_common.clients import bus
from klt_common.clients import cluster as k8s
from klt_common.configs.settings import BusSettings, ClusterSettings
from klt_common.structs import events

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture
def settings(bus_settings: BusSettings, cluster_settings: ClusterSettings, namespace: str) -> Any:
    return settings_for(bus_settings, cluster_settings, namespace)


async def test_a_redelivered_event_adopts_its_jobs_and_repeats_the_same_replies(
    cluster: k8s.ClusterClient, namespace: str, bus_settings: BusSettings, settings: Any
) -> None:
    await configure(
        cluster,
        namespace,
        v2(action("two", [shell_task("a", "echo a-ran"), shell_task("b", "echo b-ran")])),
    )
    event = keptn_event()
    async with outbox(bus_settings) as box, running(settings):
        await publish(bus_settings, event)
        await box.finished(event["id"])
        await publish(bus_settings, event)  # the same event again, as after a crash
        await box.wait_for(
            lambda _: len(box.replies_to(event["id"])) == 4,
            timeout=60,
            what="the replies to the redelivery",
        )
    replies = box.replies_to(event["id"])
    assert [r["type"].rsplit(".", 1)[1] for r in replies] == [
        "started",
        "finished",
        "started",
        "finished",
    ]
    assert replies[0]["id"] == replies[2]["id"]
    assert replies[1]["id"] == replies[3]["id"]
    assert replies[3]["data"]["result"] == "pass"
    assert "a-ran" in replies[3]["data"]["message"]
    jobs = await jobs_of(cluster, namespace, event["id"])
    assert len(jobs) == 2  # one per task, despite two deliveries


async def test_a_job_executor_stopped_mid_task_leaves_the_event_to_its_successor(
    cluster: k8s.ClusterClient, namespace: str, bus_settings: BusSettings, settings: Any
) -> None:
    await configure(
        cluster, namespace, v2(action("slow", [shell_task("slow", "sleep 4; echo slept")]))
    )
    event = keptn_event()
    async with outbox(bus_settings) as box:
        async with running(settings):
            await publish(bus_settings, event)
            deadline = time.monotonic() + 60
            while not await jobs_of(cluster, namespace, event["id"]):
                assert time.monotonic() < deadline, "the job was never created"
                await asyncio.sleep(0.2)
        # Stopped while the Job runs: no .finished, and the offset was not committed.
        assert [r["type"] for r in box.replies_to(event["id"])] == ["sh.keptn.event.test.started"]
        async with running(settings):  # the same consumer group: the event comes back
            finished = await box.finished(event["id"])
    assert finished["data"]["result"] == "pass"
    assert "slept" in finished["data"]["message"]
    assert len(await jobs_of(cluster, namespace, event["id"])) == 1


async def test_binary_mode_events_are_read(
    cluster: k8s.ClusterClient, namespace: str, bus_settings: BusSettings, settings: Any
) -> None:
    await configure(cluster, namespace, v2(action("b", [shell_task("b", "echo binary-ok")])))
    event = keptn_event()
    headers = [
        (f"ce_{name}", str(event[name]).encode())
        for name in ("specversion", "id", "source", "type", "shkeptncontext", "time")
    ]
    headers.append(("content-type", b"application/json"))
    async with outbox(bus_settings) as box, running(settings):
        producer = AIOKafkaProducer(bootstrap_servers=bus_settings.bootstrap_servers)
        await producer.start()
        try:
            await producer.send_and_wait(
                f"{bus_settings.topic_prefix}{INPUT}",
                json.dumps(event["data"]).encode(),
                key=event["shkeptncontext"].encode(),
                headers=headers,
            )
        finally:
            await producer.stop()
        finished = await box.finished(event["id"])
    assert finished["data"]["result"] == "pass"
    assert "binary-ok" in finished["data"]["message"]


async def test_a_record_that_is_no_cloudevent_is_dead_lettered_and_the_next_one_handled(
    cluster: k8s.ClusterClient, namespace: str, bus_settings: BusSettings, settings: Any
) -> None:
    await configure(cluster, namespace, v2(action("n", [shell_task("n", "echo next-ok")])))
    event = keptn_event(context="same-key")
    async with outbox(bus_settings) as box, running(settings):
        producer = AIOKafkaProducer(bootstrap_servers=bus_settings.bootstrap_servers)
        await producer.start()
        try:
            await producer.send_and_wait(
                f"{bus_settings.topic_prefix}{INPUT}", b"{not json", key=b"same-key"
            )
        finally:
            await producer.stop()
        await publish(bus_settings, event)
        finished = await box.finished(event["id"])
    assert finished["data"]["result"] == "pass"
    dead = await read_all(
        bus_settings, events.Topic.DEADLETTER.full_name(bus_settings.topic_prefix)
    )
    [letter] = dead
    assert letter.value == b"{not json"
    headers = {name: value.decode() for name, value in letter.headers}
    assert headers[bus.DLQ_ORIGINAL_TOPIC] == f"{bus_settings.topic_prefix}{INPUT}"
    # The group is named under the installation's prefix, like the topics.
    assert headers[bus.DLQ_CONSUMER_GROUP] == (
        f"{settings.bus.topic_prefix}{settings.job_executor.consumer_group}"
    )
    assert headers[bus.DLQ_ERROR_TYPE].endswith("PermanentError")
    assert "not a CloudEvent" in headers[bus.DLQ_ERROR_MESSAGE]
