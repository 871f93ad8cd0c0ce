"""Helpers for the bus integration tests (and the member process of the kill test)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from klt_common.clients import bus


@contextlib.asynccontextmanager
async def running(consumer: bus.Consumer) -> AsyncIterator[asyncio.Event]:
    """Run ``consumer`` in the background; on exit stop it gracefully and re-raise its errors."""
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop), name="test-consumer")
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


async def wait_for(condition: Callable[[], bool], *, timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds, failing the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def raw_consumer(bootstrap: str, **options: Any) -> AsyncIterator[Any]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **options)
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()


async def partitions_of(bootstrap: str, topic: str) -> list[Any]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    assert described["error_code"] == 0, described
    return [TopicPartition(topic, p["partition"]) for p in described["partitions"]]


async def read_topic(bootstrap: str, topic: str, *, count: int, timeout: float = 15) -> list[Any]:
    """Read exactly ``count`` records from the beginning of ``topic`` (all partitions)."""
    async with raw_consumer(bootstrap, auto_offset_reset="earliest") as consumer:
        tps = await partitions_of(bootstrap, topic)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(records) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for part in batch.values():
                records.extend(part)
        assert len(records) == count, f"{topic}: expected {count} records, found {len(records)}"
        return records


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    async with raw_consumer(bootstrap) as consumer:
        tps = await partitions_of(bootstrap, topic)
        return {tp.partition: offset for tp, offset in (await consumer.end_offsets(tps)).items()}


async def committed_offsets(bootstrap: str, group_id: str, topic: str) -> dict[int, int | None]:
    async with raw_consumer(bootstrap, group_id=group_id) as consumer:
        tps = await partitions_of(bootstrap, topic)
        return {tp.partition: await consumer.committed(tp) for tp in tps}


def header(record: Any, name: str) -> str:
    values: list[str] = [raw.decode() for key, raw in record.headers if key == name]
    assert len(values) == 1, f"header {name}: {values}"
    return values[0]
