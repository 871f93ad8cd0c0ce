"""`klt topics` shows a backlog draining while two task-runner instances share its topic.

Two real task-runners (one consumer group, the test's own topic prefix and runner class) share
the partitions of ``klt.tasks``. A backlog of TaskRequested events piles up while both are
stopped; `klt topics` shows it as lag of the group. Once both run again, repeated `klt topics`
calls show the lag going down to zero, and each instance's /metrics says it consumed part of it.
The requests name KeptnTasks that do not exist, which costs each handler one read: the drain,
not the tasks, is what is under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from taskrunner_kit import Running, make_settings, new_class, start

from klt_common.clients import bus
from klt_common.configs.settings import BusSettings, ClusterSettings
from klt_common.structs import events
from klt_task_runner.settings import TaskRunnerSettings

BACKLOG = 3000
APPS = 24  # partition keys are <namespace>/<app>: enough apps to reach every partition


async def _topics(bus_settings: BusSettings) -> list[list[str]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "klt_cli.main",
        "topics",
        "--bootstrap",
        bus_settings.bootstrap_servers,
        "--prefix",
        bus_settings.topic_prefix,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(os.environ),
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return [line.split() for line in out.decode().splitlines()]


def _group_row(rows: list[list[str]], group: str, topic: str) -> tuple[str, int, int] | None:
    """(state, members, lag) of ``group`` on ``topic``, or None when it has no offsets yet."""
    for row in rows:
        if len(row) == 5 and row[0] == group and row[3] == topic:
            return row[1], int(row[2]), int(row[4])
    return None


async def _consumed(port: int, group: str) -> float:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        text = await response.text()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "klt_bus_consumed_total" and sample.labels.get("group") == group:
                total += sample.value
    return total


@contextlib.asynccontextmanager
async def _two_runners(settings: TaskRunnerSettings) -> AsyncIterator[tuple[Running, Running]]:
    """Two instances started together, so both join the group in one rebalance and neither
    takes the whole backlog before the other arrives."""
    first, second = await asyncio.gather(start(settings), start(settings))
    try:
        yield first, second
    finally:
        await asyncio.gather(first.close(), second.close())


async def _publish(bus_settings: BusSettings, namespace: str, count: int, tag: str) -> None:
    async with bus.Publisher(bus_settings, client_id="backlog") as publisher:
        sends = [
            publisher.publish(
                events.TaskRequested(
                    namespace=namespace,
                    app=f"app-{n % APPS}",
                    task_name=f"{tag}-{n}",
                    phase="WorkloadPreDeployTasks",
                ),
                source="/test",
            )
            for n in range(count)
        ]
        for start in range(0, len(sends), 200):
            await asyncio.gather(*sends[start : start + 200])


async def test_klt_topics_shows_the_lag_of_two_task_runners_draining(
    namespace: str, bus_settings: BusSettings, cluster_settings: ClusterSettings
) -> None:
    await bus.ensure_topics(bus_settings, list(events.Topic))
    settings = make_settings(bus_settings, cluster_settings, new_class())
    group = f"{bus_settings.topic_prefix}{settings.tasks.consumer_group}"
    topic = events.Topic.TASKS.full_name(bus_settings.topic_prefix)

    # Both instances join the group and commit the warm-up, so the group has offsets to show.
    async with _two_runners(settings):
        await _publish(bus_settings, namespace, APPS, "warm")
        for _ in range(60):
            row = _group_row(await _topics(bus_settings), group, topic)
            if row is not None and row[2] == 0:
                break
        else:
            raise AssertionError(f"the warm-up was never consumed: {row}")

    await _publish(bus_settings, namespace, BACKLOG, "backlog")
    stopped = _group_row(await _topics(bus_settings), group, topic)
    assert stopped == ("Empty", 0, BACKLOG), "the backlog waits as lag of the stopped group"

    samples: list[tuple[str, int, int]] = []
    async with _two_runners(settings) as (first, second):
        while True:
            row = _group_row(await _topics(bus_settings), group, topic)
            assert row is not None
            samples.append(row)
            if row[2] == 0:
                break
            assert len(samples) < 120, f"the lag never drained: {samples}"
        # The metric's label is the group as the service names it, without the prefix.
        own = settings.tasks.consumer_group
        shares = [await _consumed(first.port, own), await _consumed(second.port, own)]

    lags = [lag for _, _, lag in samples]
    assert lags == sorted(lags, reverse=True), f"lag only goes down while nothing is added: {lags}"
    assert lags[-1] == 0
    assert any(members == 2 and lag > 0 for _, members, lag in samples), samples
    # Both instances had partitions and consumed a share of the backlog.
    assert all(share > 0 for share in shares), shares
    assert sum(shares) == BACKLOG
