"""`klt events tail` decodes and filters what is on the bus; `klt topics` shows lag per group."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid

from klt_common.clients import bus
from klt_common.configs.settings import BusSettings
from klt_common.structs import events


def _finished(namespace: str, app: str, n: int) -> events.TaskFinished:
    return events.TaskFinished(
        namespace=namespace, app=app, task_name=f"task-{n}", state=events.State.SUCCEEDED
    )


async def _klt(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "klt_cli.main",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(os.environ),
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_events_tail_decodes_and_filters_by_app_and_type(bus_settings: BusSettings) -> None:
    await bus.ensure_topics(bus_settings, list(events.Topic))
    async with bus.Publisher(bus_settings, client_id="cli-test") as publisher:
        for n in range(3):
            await publisher.publish(_finished("shop", "cart", n), source="/test")
        await publisher.publish(_finished("shop", "web", 9), source="/test")
        await publisher.publish(
            events.PhaseChanged(
                namespace="shop",
                app="cart",
                object_kind="KeptnAppVersion",
                object_name="cart-1",
                phase="AppDeploy",
                state=events.State.PROGRESSING,
            ),
            source="/test",
        )
    code, out, err = await _klt(
        "events",
        "tail",
        "--bootstrap",
        bus_settings.bootstrap_servers,
        "--prefix",
        bus_settings.topic_prefix,
        "--from-beginning",
        "--json",
        "--app",
        "cart",
        "--type",
        "sh.klt.task.*",
        "--max",
        "3",
    )
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert sorted(line["data"]["task_name"] for line in lines) == ["task-0", "task-1", "task-2"]
    assert all(line["type"] == "sh.klt.task.finished" for line in lines)
    assert all(
        line["kafka"]["topic"] == f"{bus_settings.topic_prefix}klt.lifecycle" for line in lines
    )


async def test_topics_shows_the_lag_of_a_consumer_group(bus_settings: BusSettings) -> None:
    await bus.ensure_topics(bus_settings, list(events.Topic))
    group = f"cli-{uuid.uuid4().hex[:6]}"
    handled = asyncio.Event()
    count = 0

    async def on_finished(_: events.Envelope[events.TaskFinished], __: bus.Coordinates) -> None:
        nonlocal count
        count += 1
        if count == 4:
            handled.set()

    async with bus.Publisher(bus_settings, client_id="cli-test") as publisher:
        for n in range(4):
            await publisher.publish(_finished("shop", "cart", n), source="/test")
        consumer = bus.Consumer(bus_settings, group_id=group, client_id="cli-test")
        consumer.register(events.TaskFinished, on_finished)
        stop = asyncio.Event()
        task = asyncio.create_task(consumer.run(stop))
        await asyncio.wait_for(handled.wait(), 30)
        stop.set()
        await task
        for n in range(4, 7):
            await publisher.publish(_finished("shop", "cart", n), source="/test")
    code, out, err = await _klt(
        "topics",
        "--bootstrap",
        bus_settings.bootstrap_servers,
        "--prefix",
        bus_settings.topic_prefix,
    )
    assert code == 0, err
    rows = [line.split() for line in out.splitlines()]
    lifecycle = f"{bus_settings.topic_prefix}klt.lifecycle"
    assert [lifecycle, str(bus_settings.partitions), "7"] in rows
    # Groups live under the installation's prefix too.
    assert [f"{bus_settings.topic_prefix}{group}", "Empty", "0", lifecycle, "3"] in rows


async def test_unreachable_brokers_give_exit_code_1_and_a_message() -> None:
    code, _, err = await _klt("topics", "--bootstrap", "127.0.0.1:1")
    assert code == 1
    assert err.strip().splitlines() == [err.strip().splitlines()[-1]]
    assert err.startswith("klt: error:")
