"""Read-only views of the bus for operators: topics, consumer groups and lag, and a tail.

Nothing here joins a consumer group or commits an offset: ``tail`` assigns partitions directly,
so watching a topic never steals partitions from a service or moves its offsets.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from klt_common.configs.settings import BusSettings


@dataclass(frozen=True)
class TopicInfo:
    name: str
    partitions: int
    messages: int
    """Sum of end offsets minus beginning offsets: what is retained right now."""


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    end_offset: int
    committed: int | None

    @property
    def lag(self) -> int:
        return self.end_offset - (self.committed or 0)


@dataclass(frozen=True)
class GroupInfo:
    group: str
    state: str
    members: int
    partitions: list[PartitionLag] = field(default_factory=list)

    @property
    def lag(self) -> int:
        return sum(p.lag for p in self.partitions)


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def _consumer(settings: BusSettings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        enable_auto_commit=False,
        request_timeout_ms=settings.request_timeout_ms,
    )


async def describe(
    settings: BusSettings, names: Iterable[str] | None = None
) -> tuple[list[TopicInfo], list[GroupInfo]]:
    """The given topics (full names; default: every topic under the settings' prefix) and the
    lag of every consumer group on them."""
    prefix = settings.topic_prefix
    wanted = set(names) if names is not None else None
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers, request_timeout_ms=settings.request_timeout_ms
    )
    await admin.start()
    consumer = _consumer(settings)
    try:
        await consumer.start()
    except BaseException:
        await admin.close()
        raise
    try:
        described = await admin.describe_topics()
        partitions: list[TopicPartition] = []
        for topic in described:
            name = topic["topic"]
            if topic.get("is_internal") or name.startswith("__") or not name.startswith(prefix):
                continue
            if wanted is not None and name not in wanted:
                continue
            partitions.extend(TopicPartition(name, p["partition"]) for p in topic["partitions"])
        ends: dict[TopicPartition, int] = (
            await consumer.end_offsets(partitions) if partitions else {}
        )
        begins: dict[TopicPartition, int] = (
            await consumer.beginning_offsets(partitions) if partitions else {}
        )
        topics: dict[str, list[TopicPartition]] = {}
        for tp in partitions:
            topics.setdefault(tp.topic, []).append(tp)
        topic_infos = [
            TopicInfo(name, len(tps), sum(ends[tp] - begins[tp] for tp in tps))
            for name, tps in sorted(topics.items())
        ]
        group_infos: list[GroupInfo] = []
        groups = sorted(g[0] for g in await admin.list_consumer_groups())
        for group in groups:
            offsets = await admin.list_consumer_group_offsets(group)
            mine = {tp: meta.offset for tp, meta in offsets.items() if tp.topic in topics}
            if not mine:
                continue
            description = (await admin.describe_consumer_groups([group]))[0].to_object()
            entry: dict[str, Any] = description["groups"][0]
            lags = [
                PartitionLag(tp.topic, tp.partition, ends.get(tp, 0), mine.get(tp))
                for tp in sorted(
                    {*mine, *(t for t in partitions if t.topic in {m.topic for m in mine})}
                )
            ]
            group_infos.append(
                GroupInfo(group, str(entry.get("state", "")), len(entry.get("members") or []), lags)
            )
        return topic_infos, group_infos
    finally:
        await consumer.stop()
        await admin.close()


async def tail(
    settings: BusSettings,
    topics: Iterable[str],
    *,
    from_beginning: bool = False,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[int], None] | None = None,
) -> AsyncGenerator[Record, None]:
    """Yield records of ``topics`` (full names) as they arrive, without joining a group.

    ``on_ready`` is called with the number of partitions once the start positions are fixed:
    from then on nothing published is missed (seeking alone is lazy in aiokafka).
    """
    wanted = list(topics)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers, request_timeout_ms=settings.request_timeout_ms
    )
    await admin.start()
    try:
        # A consumer that subscribes to nothing keeps no topic metadata, so ask the cluster.
        described = await admin.describe_topics(wanted)
    finally:
        await admin.close()
    partitions = [
        TopicPartition(t["topic"], p["partition"])
        for t in described
        if t.get("error_code", 0) == 0
        for p in t["partitions"]
    ]
    consumer = _consumer(settings)
    await consumer.start()
    try:
        if not partitions:
            return
        consumer.assign(partitions)
        if from_beginning:
            await consumer.seek_to_beginning(*partitions)
        else:
            await consumer.seek_to_end(*partitions)
        for tp in partitions:
            await consumer.position(tp)
        if on_ready is not None:
            on_ready(len(partitions))
        while stop is None or not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200)
            for tp, records in batches.items():
                for r in records:
                    yield Record(
                        tp.topic,
                        tp.partition,
                        r.offset,
                        r.timestamp,
                        r.key,
                        r.value,
                        [(k, bytes(v)) for k, v in (r.headers or ())],
                    )
    finally:
        await consumer.stop()


async def delete_prefixed_topics(settings: BusSettings) -> list[str]:
    """Delete every topic under the settings' (non-empty) prefix; returns their names.

    For short-lived installations such as a test's: a broker that keeps thousands of dead
    topics starts slowly and answers metadata requests slowly.
    """
    if not settings.topic_prefix:
        raise ValueError("refusing to delete topics without a prefix")
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers, request_timeout_ms=settings.request_timeout_ms
    )
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(settings.topic_prefix)]
        if names:
            await admin.delete_topics(names)
        return names
    finally:
        await admin.close()
