"""Raw Kafka records for foreign event formats: a consumer-group member and a publisher.

``clients.bus`` speaks the klt event catalogue only: it decodes every record into a typed
envelope and skips types it does not know. Some services also bridge to systems with their own
wire format (the task-runner's job executor reads and writes Keptn's CloudEvents). This module
gives them the same delivery machinery without the catalogue:

- ``RawConsumer`` subscribes to named topics and hands each record (value, key, headers and
  coordinates) to one handler. Everything else is ``bus.Consumer``'s contract, through the same
  ``_bus_runner``: records of one partition strictly in order, an offset committed only after
  its record was handled or dead-lettered, drain-and-commit on revocation and stop, retries
  after ``handler_retry_delays`` (``PermanentError`` is not retried), dead-lettering to the
  catalogue's ``klt.deadletter`` topic with the same headers, W3C trace context taken from
  the record headers while the handler runs, and the same bus metrics (with the event type
  ``raw``: foreign types are not label values).
- ``RawPublisher`` writes pre-encoded records to a named topic through an already started
  ``bus.Publisher`` (so a service keeps one producer, flushed by the service template at
  shutdown), with the current trace context added to the headers.

Topic names given here are *before* ``BusSettings.topic_prefix``, like ``events.Topic``.
Interpreting the bytes is the caller's business: nothing here parses a value.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from opentelemetry import context as otel_context
from opentelemetry import propagate

from klt_common.aiokits import retry as retries
from klt_common.aiokits.errors import TemporaryError
from klt_common.clients import _bus_runner, bus
from klt_common.configs.settings import BusSettings
from klt_common.observability.bus_metrics import RAW, BusMetrics
from klt_common.structs import events

__all__ = ["RawConsumer", "RawHandler", "RawPublisher", "RawRecord"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RawRecord:
    """One Kafka record, as the handler of a ``RawConsumer`` gets it."""

    topic: str
    """The full topic name, prefix included."""

    partition: int
    offset: int
    timestamp_ms: int
    """The record's timestamp (producer create time), milliseconds since the epoch."""

    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    """Kafka headers in record order (names may repeat)."""

    def header(self, name: str) -> str | None:
        """The first header called ``name`` (case-insensitive), decoded as UTF-8 (lenient)."""
        wanted = name.lower()
        for key, raw in self.headers:
            if key.lower() == wanted:
                return raw.decode("utf-8", errors="replace")
        return None

    def where(self) -> str:
        """``topic[partition]@offset``, for log lines."""
        return f"{self.topic}[{self.partition}]@{self.offset}"


class RawHandler(Protocol):
    """Handles one record. ``stop`` is set when the partition is being given up (rebalance or
    shutdown): a long handler should then return or raise promptly; its record stays
    uncommitted and its next owner handles it again.

    Raise ``TemporaryError`` (or anything unexpected) to be retried, ``PermanentError`` to send
    the record to the dead-letter topic at once.
    """

    def __call__(self, record: RawRecord, *, stop: asyncio.Event) -> Awaitable[None]: ...


class RawConsumer:
    """A consumer-group member that hands every record of its topics to one handler.

    ::

        consumer = RawConsumer(settings.bus, group_id="g", client_id=instance,
                               topics=["keptn.events"], handler=on_record)
        await consumer.run(stop)
    """

    def __init__(
        self,
        settings: BusSettings,
        *,
        group_id: str,
        client_id: str,
        topics: Iterable[str],
        handler: RawHandler,
        metrics: BusMetrics | None = None,
    ) -> None:
        self._settings = settings
        # Under the installation's topic prefix, like its topics: two installations (or a
        # test and the stack) sharing a broker never share a group, so neither's members stall
        # the other's rebalances.
        self._group_id = f"{settings.topic_prefix}{group_id}"
        self._client_id = client_id
        self._topics = tuple(sorted(set(topics)))
        self._handler = handler
        self._metrics = metrics.group(group_id) if metrics is not None else None
        if not self._topics:
            raise ValueError("a raw consumer needs at least one topic")

    @property
    def topics(self) -> frozenset[str]:
        """The full names of the topics this consumer subscribes to."""
        return frozenset(f"{self._settings.topic_prefix}{name}" for name in self._topics)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, then drain, commit and leave the group.

        The topics must exist (see ``bus.ensure_topics``); so must the dead-letter topic, which
        the service template creates with the catalogue.

        Raises:
            TemporaryError: the brokers could not be reached at start (and no stop came).
            Exception: whatever broke the consumer itself (never a handler's error).
        """
        async with contextlib.AsyncExitStack() as stack:
            try:
                dead_letters = bus.Publisher(self._settings, client_id=f"{self._client_id}-dlq")
                await dead_letters.start(stop=stop)
                stack.push_async_callback(dead_letters.stop)
                consumer = await self._connect(stop)
                stack.push_async_callback(consumer.stop)  # also leaves the group
            except TemporaryError:
                if stop.is_set():
                    return
                raise
            dead_letter_topic = events.Topic.DEADLETTER.full_name(self._settings.topic_prefix)

            async def dead_letter(record: Any, exc: BaseException) -> None:
                await bus._send_dead_letter(
                    dead_letters, dead_letter_topic, record, exc, group_id=self._group_id
                )
                if self._metrics is not None:
                    self._metrics.dead_lettered(record.topic, RAW, exc)

            runner = _bus_runner.Runner(
                consumer,
                settings=self._settings,
                dispatch=self._dispatch,
                dead_letter=dead_letter,
                metrics=self._metrics,
            )
            consumer.subscribe(sorted(self.topics), listener=runner.listener)
            await runner.run(stop)

    async def _connect(self, stop: asyncio.Event) -> Any:
        # Same client as ``bus.Consumer``; only the subscription differs.
        return await bus.connect_group_member(
            self._settings, group_id=self._group_id, client_id=self._client_id, stop=stop
        )

    async def _dispatch(self, record: Any, *, stop: asyncio.Event) -> None:
        raw = RawRecord(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            timestamp_ms=record.timestamp,
            key=record.key,
            value=record.value,
            headers=tuple((name, bytes(value or b"")) for name, value in record.headers),
        )
        metrics = self._metrics
        attempts = 0

        async def attempt() -> None:
            nonlocal attempts
            attempts += 1
            started = time.perf_counter()
            try:
                await self._handler(raw, stop=stop)
            finally:
                if metrics is not None:
                    metrics.observe_handler(RAW, time.perf_counter() - started)

        carrier = {name: value.decode("latin-1") for name, value in raw.headers}
        token = otel_context.attach(propagate.extract(carrier))
        try:
            await retries.retry(
                attempt,
                delays=self._settings.handler_retry_delays,
                what=f"handling the record at {raw.where()}",
                # As in ``bus.Consumer``: unexpected errors are retried too, and a real bug
                # reaches the dead-letter topic a few seconds later all the same.
                is_temporary=lambda exc: True,
                stop=stop,
            )
        finally:
            otel_context.detach(token)
        if metrics is not None:
            metrics.handled(record.topic, RAW, attempts=attempts)


class RawPublisher:
    """Publishes pre-encoded records to named topics through a started ``bus.Publisher``.

    Same guarantees as ``bus.Publisher.publish``: the call returns once all in-sync replicas
    have the record, and a retry inside the producer never duplicates it.
    """

    def __init__(self, publisher: bus.Publisher, settings: BusSettings) -> None:
        self._publisher = publisher
        self._settings = settings

    async def publish(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | str | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> bus.Coordinates:
        """Publish one record to ``topic`` (a name before the prefix) and wait for the brokers.

        Raises:
            TemporaryError: Kafka did not acknowledge in time; publishing again is safe.
            PermanentError: Kafka refused the record (too large, not authorised).
        """
        record_headers: events.Headers = list(headers)
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        record_headers.extend((name, text.encode()) for name, text in carrier.items())
        raw_key = key.encode() if isinstance(key, str) else key
        full_topic = f"{self._settings.topic_prefix}{topic}"
        return await self._publisher._send(
            full_topic, raw_key, value, record_headers, event_type=RAW
        )
