"""The Kafka bus: topic set-up, a typed publisher and a consumer-group runner.

This module (with its private ``_bus_*`` helpers) is the only code that imports aiokafka for
messaging. Everything above it deals in catalogue payloads and ``Envelope`` objects from
``klt_common.structs.events``; nothing above it sees a Kafka record.

Delivery guarantees
-------------------
At least once, in order per partition. A consumer commits a record's offset only after the
record was handled, dead-lettered or deliberately skipped, so a crash (even SIGKILL) loses
nothing but may redeliver whatever was handled since the last commit. Handlers therefore make
their effects idempotent, keyed by the CloudEvent ``id`` or by the Kubernetes object they
change (a status that is already set is not set again).

- **Ordering:** one worker task per assigned partition handles records strictly in offset
  order; different partitions run concurrently. Partition keys are ``<namespace>/<app>``, so
  one app's events are serialised and different apps proceed in parallel.
- **Commits:** workers report handled offsets to a committer that commits in the background,
  coalescing whatever accumulated while the previous commit was in flight: one commit per
  record when idle, batched under load, and never an offset whose record is not done.
- **Rebalances:** when partitions are revoked (aiokafka's ``ConsumerRebalanceListener``, run
  before the group re-forms), their workers finish the record in hand (bounded by
  ``drain_grace_seconds``), drop records fetched but not started, and the handled offsets are
  committed. The next owner starts exactly where we stopped, so a graceful rebalance
  redelivers nothing.
- **Stop:** ``Consumer.run`` returns after its stop event is set, having drained in-flight
  records the same way, committed, and left the group (so the survivors rebalance at once
  instead of after a session timeout).
- **Failures:** a handler raising ``TemporaryError`` (or any unexpected exception) is retried
  after each of ``handler_retry_delays``; ``PermanentError`` is not retried. A record that
  still fails, or cannot be decoded at all, is copied to the dead-letter topic with headers
  naming where it came from and why it failed (exception type and message only, never field
  values), then committed: a bad record never blocks its partition and never loops. Records
  of unknown event types are skipped and committed (a newer producer may have introduced
  them). Retries stop early when the partition is revoked or the consumer stops; the record
  then stays uncommitted and its next owner tries again.
- **Tracing:** the publisher injects the current OpenTelemetry context into the record
  headers (W3C ``traceparent``/``tracestate``); the consumer extracts it and makes it current
  while the handler runs.
- **Metrics:** given a ``BusMetrics`` (the service template passes its registry's), the
  publisher counts what it published and each consumer counts outcomes, times handler attempts
  and reports its partitions' lag (``observability.bus_metrics`` lists the series).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    TopicAlreadyExistsError,
    for_code,
)
from opentelemetry import context as otel_context
from opentelemetry import propagate

from klt_common.aiokits import retry as retries
from klt_common.aiokits.errors import PermanentError, TemporaryError
from klt_common.clients import _bus_runner
from klt_common.configs.settings import BusSettings
from klt_common.observability import bus_metrics
from klt_common.observability.bus_metrics import BusMetrics
from klt_common.structs import events

__all__ = [
    "DLQ_CONSUMER_GROUP",
    "DLQ_ERROR_MESSAGE",
    "DLQ_ERROR_TYPE",
    "DLQ_FAILED_AT",
    "DLQ_ORIGINAL_OFFSET",
    "DLQ_ORIGINAL_PARTITION",
    "DLQ_ORIGINAL_TOPIC",
    "Consumer",
    "Coordinates",
    "Handler",
    "Publisher",
    "ensure_topics",
]

_log = logging.getLogger(__name__)

P = TypeVar("P", bound=events.EventPayload)
T = TypeVar("T")

# Headers added to a dead-lettered record (next to its original headers).
DLQ_ORIGINAL_TOPIC = "klt-dlq-original-topic"
DLQ_ORIGINAL_PARTITION = "klt-dlq-original-partition"
DLQ_ORIGINAL_OFFSET = "klt-dlq-original-offset"
DLQ_CONSUMER_GROUP = "klt-dlq-consumer-group"
DLQ_ERROR_TYPE = "klt-dlq-error-type"
DLQ_ERROR_MESSAGE = "klt-dlq-error-message"
DLQ_FAILED_AT = "klt-dlq-failed-at"
_DLQ_HEADER_PREFIX = "klt-dlq-"

_DLQ_MESSAGE_LIMIT = 1024
"""Characters of the error message kept in the dead-letter header: enough to diagnose, small
enough that a huge exception text cannot push the record over the broker's size limit."""


@dataclass(frozen=True)
class Coordinates:
    """Where a handled event sits in Kafka; for logs and for handlers that need the offset."""

    topic: str
    """The full topic name, prefix included."""

    partition: int
    offset: int
    timestamp_ms: int
    """The record's timestamp (producer create time), milliseconds since the epoch."""


Handler = Callable[[events.Envelope[P], Coordinates], Awaitable[None]]
"""An event handler: raises ``TemporaryError`` to be retried, ``PermanentError`` to give up."""


# --------------------------------------------------------------------------------------------
# Topics


async def ensure_topics(
    settings: BusSettings, names: Iterable[str], *, stop: asyncio.Event | None = None
) -> None:
    """Create the given topics if they do not exist, and wait until they are usable.

    Idempotent and safe to run from several services at once: a topic created concurrently
    by someone else counts as success. Existing topics are left as they are (their partition
    count is not changed).

    Args:
        settings: the bus settings; ``topic_prefix`` is prepended to every name, and
            ``partitions`` and ``replication_factor`` shape new topics.
        names: topic names before the prefix, usually ``events.Topic`` members.
        stop: ends the connection retries early.

    Raises:
        TemporaryError: the brokers could not be reached, or the topics did not get leaders.
        PermanentError: the broker refused to create a topic (bad name, authorisation).
    """
    wanted = sorted({f"{settings.topic_prefix}{name}" for name in names})
    if not wanted:
        return
    admin: Any = await _start_client(
        lambda: AIOKafkaAdminClient(
            bootstrap_servers=settings.bootstrap_servers,
            request_timeout_ms=settings.request_timeout_ms,
            client_id="klt-admin",
        ),
        settings=settings,
        what="kafka admin client",
        stop=stop,
    )
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in wanted if name not in existing]
        if missing:
            response = await admin.create_topics(
                [
                    NewTopic(
                        name=name,
                        num_partitions=settings.partitions,
                        replication_factor=settings.replication_factor,
                    )
                    for name in missing
                ]
            )
            for name, code, *rest in response.topic_errors:
                error = for_code(code)
                if code != 0 and error is not TopicAlreadyExistsError:
                    detail = rest[0] if rest and rest[0] else error.__name__
                    raise PermanentError(f"cannot create topic {name}: {detail}")
            _log.info("created topics %s", ", ".join(missing))
        await _wait_for_leaders(admin, wanted, timeout=settings.request_timeout_ms / 1000)
    except KafkaError as exc:
        raise _classify(exc, "topic set-up") from exc
    finally:
        await admin.close()


async def _wait_for_leaders(admin: Any, topics: list[str], *, timeout: float) -> None:
    # Topic creation returns once the controller has accepted it; a consumer that subscribes
    # before the broker serves the topic's metadata is assigned nothing and only notices the
    # topic at its next metadata refresh (minutes). So wait until every partition has a leader.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        described = await admin.describe_topics(topics)
        ready = {
            t["topic"]
            for t in described
            if t["error_code"] == 0
            and t["partitions"]
            and all(p["leader"] >= 0 for p in t["partitions"])
        }
        if ready >= set(topics):
            return
        if loop.time() > deadline:
            raise TemporaryError(f"topics without leaders: {sorted(set(topics) - ready)}")
        await asyncio.sleep(0.1)


# --------------------------------------------------------------------------------------------
# Publishing


class Publisher:
    """Publishes catalogue events, each to its topic and keyed by its partition key.

    ``publish`` returns once all in-sync replicas have the record (``acks=all``), and the
    idempotent producer keeps retries from duplicating or reordering records, so "publish,
    then record in a status that it was published" is a safe sequence.

    Use as ``async with Publisher(settings, client_id=...) as publisher:``.
    """

    def __init__(
        self, settings: BusSettings, *, client_id: str, metrics: BusMetrics | None = None
    ) -> None:
        self._settings = settings
        self._client_id = client_id
        self._metrics = metrics
        self._producer: Any = None

    async def start(self, *, stop: asyncio.Event | None = None) -> None:
        """Connect to the brokers, retrying per ``connect_retry_delays``."""
        if self._producer is not None:
            return
        settings = self._settings
        self._producer = await _start_client(
            lambda: AIOKafkaProducer(
                bootstrap_servers=settings.bootstrap_servers,
                client_id=self._client_id,
                acks="all",
                enable_idempotence=True,
                request_timeout_ms=settings.request_timeout_ms,
            ),
            settings=settings,
            what="kafka producer",
            stop=stop,
        )

    async def stop(self) -> None:
        """Flush what is pending and disconnect."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def __aenter__(self) -> Publisher:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def publish(
        self,
        payload: P,
        *,
        source: str,
        subject: str | None = None,
        headers: Mapping[str, str] | None = None,
        event_id: str | None = None,
    ) -> events.Envelope[P]:
        """Publish one event and wait until the brokers have it.

        Args:
            payload: the event data; its class picks the topic, type and partition key.
            source: the producing service as a URI-reference, e.g. ``/klt/scheduler``.
            subject: the object concerned; defaults to the payload's main object.
            headers: extra Kafka headers (not part of the event).
            event_id: a deterministic CloudEvent id (see ``events.make_event``).

        Returns:
            The published envelope (its ``id`` is what consumers deduplicate by).

        Raises:
            TemporaryError: Kafka did not acknowledge in time; publishing again is safe.
            PermanentError: Kafka refused the record (too large, not authorised).
        """
        envelope = events.make_event(payload, source=source, subject=subject, event_id=event_id)
        value, record_headers = events.encode(envelope)
        for name, text in (headers or {}).items():
            record_headers.append((name, text.encode()))
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        record_headers.extend((name, text.encode()) for name, text in carrier.items())
        topic = payload.topic.full_name(self._settings.topic_prefix)
        await self._send(
            topic, envelope.partitionkey.encode(), value, record_headers, event_type=envelope.type
        )
        return envelope

    async def _send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: events.Headers,
        *,
        event_type: str | None = None,
    ) -> Coordinates:
        """Send one record; ``event_type`` labels it in ``klt_bus_published_total`` (dead
        letters pass none: they are counted as dead-lettered)."""
        if self._producer is None:
            raise RuntimeError("the publisher is not started")
        try:
            meta = await self._producer.send_and_wait(topic, value=value, key=key, headers=headers)
        except KafkaError as exc:
            raise _classify(exc, f"publishing to {topic}") from exc
        _log.debug("published to %s[%d]@%d", topic, meta.partition, meta.offset)
        if self._metrics is not None and event_type is not None:
            self._metrics.count_published(topic, event_type)
        return Coordinates(
            topic=topic, partition=meta.partition, offset=meta.offset, timestamp_ms=meta.timestamp
        )


# --------------------------------------------------------------------------------------------
# Consuming


@dataclass(frozen=True)
class _Route:
    model: type[events.EventPayload]
    handler: Handler[Any]


class Consumer:
    """A consumer-group member that dispatches events to handlers by event type.

    Register handlers, then run until stopped::

        consumer = Consumer(settings.bus, group_id="klt-scheduler", client_id=instance)
        consumer.register(events.TaskFinished, on_task_finished)
        await consumer.run(stop)

    The consumer subscribes to the topics of the registered event types; other types on those
    topics are skipped. See the module docstring for ordering, commits and failure handling.
    """

    def __init__(
        self,
        settings: BusSettings,
        *,
        group_id: str,
        client_id: str,
        metrics: BusMetrics | None = None,
    ) -> None:
        self._settings = settings
        # Under the installation's topic prefix, like its topics: two installations (or a
        # test and the stack) sharing a broker never share a group, so neither's members stall
        # the other's rebalances.
        self._group_id = f"{settings.topic_prefix}{group_id}"
        self._client_id = client_id
        self._routes: dict[str, _Route] = {}
        self._metrics = metrics.group(group_id) if metrics is not None else None
        # The event type of the record each partition failed on last, for the dead-letter
        # count (the runner that dead-letters it only sees the raw record). One entry per
        # partition at most: a partition handles one record at a time.
        self._failed_types: dict[tuple[str, int], str] = {}

    def register(self, model: type[P], handler: Handler[P]) -> None:
        """Call ``handler`` for every event of type ``model`` (one handler per type)."""
        if model.event_type in self._routes:
            raise ValueError(f"a handler for {model.event_type} is already registered")
        self._routes[model.event_type] = _Route(model=model, handler=handler)

    @property
    def topics(self) -> frozenset[str]:
        """The full names of the topics this consumer subscribes to."""
        prefix = self._settings.topic_prefix
        return frozenset(
            topic.full_name(prefix)
            for topic in events.topics_for(r.model for r in self._routes.values())
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, then drain, commit and leave the group.

        Raises:
            TemporaryError: the brokers could not be reached at start (and no stop came).
            Exception: whatever broke the consumer itself (never a handler's error).
        """
        if not self._routes:
            raise ValueError("no handlers registered")
        async with contextlib.AsyncExitStack() as stack:
            try:
                dead_letters = Publisher(self._settings, client_id=f"{self._client_id}-dlq")
                await dead_letters.start(stop=stop)
                stack.push_async_callback(dead_letters.stop)
                consumer = await self._connect(stop)
                stack.push_async_callback(consumer.stop)  # also leaves the group
            except TemporaryError:
                if stop.is_set():
                    return  # asked to stop while still waiting for the brokers
                raise
            dead_letter_topic = events.Topic.DEADLETTER.full_name(self._settings.topic_prefix)

            async def dead_letter(record: Any, exc: BaseException) -> None:
                await _send_dead_letter(
                    dead_letters, dead_letter_topic, record, exc, group_id=self._group_id
                )
                if self._metrics is not None:
                    failed = self._failed_types.pop((record.topic, record.partition), None)
                    self._metrics.dead_lettered(record.topic, failed or bus_metrics.MALFORMED, exc)

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
        return await connect_group_member(
            self._settings, group_id=self._group_id, client_id=self._client_id, stop=stop
        )

    async def _dispatch(self, record: Any, *, stop: asyncio.Event) -> None:
        """Decode and handle one record; raises only what should dead-letter it."""
        coordinates = Coordinates(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            timestamp_ms=record.timestamp,
        )
        metrics = self._metrics
        try:
            envelope = events.decode(record.value, record.headers)
        except events.UnknownEventTypeError as exc:
            _log.debug("skipping %s at %s: %s", exc.event_type, coordinates, exc)
            if metrics is not None:
                metrics.skipped(record.topic, bus_metrics.UNKNOWN)
            return
        except events.EventDecodeError:
            if metrics is not None:
                self._failed_types[record.topic, record.partition] = bus_metrics.MALFORMED
            raise
        route = self._routes.get(envelope.type)
        if route is None:
            # A catalogue type we do not consume, sharing a topic with ones we do.
            if metrics is not None:
                metrics.skipped(record.topic, envelope.type)
            return
        attempts = 0

        async def attempt() -> None:
            nonlocal attempts
            attempts += 1
            started = time.perf_counter()
            try:
                await route.handler(envelope, coordinates)
            finally:
                if metrics is not None:
                    metrics.observe_handler(envelope.type, time.perf_counter() - started)

        carrier = {name: raw.decode("latin-1") for name, raw in record.headers}
        token = otel_context.attach(propagate.extract(carrier))
        try:
            await retries.retry(
                attempt,
                delays=self._settings.handler_retry_delays,
                what=f"handling {envelope.type} {envelope.id} at {_where(coordinates)}",
                # Unexpected exceptions are retried as well: most are transient (a dropped
                # connection in some client library); a real bug reaches the dead-letter
                # topic a few seconds later all the same.
                is_temporary=lambda exc: True,
                stop=stop,
            )
        except BaseException:
            if metrics is not None:
                self._failed_types[record.topic, record.partition] = envelope.type
            raise
        finally:
            otel_context.detach(token)
        if metrics is not None:
            metrics.handled(record.topic, envelope.type, attempts=attempts)


async def connect_group_member(
    settings: BusSettings, *, group_id: str, client_id: str, stop: asyncio.Event
) -> Any:
    """A started consumer-group member (not yet subscribed), with the options every klt
    consumer shares; retried like every client start until ``stop``."""
    return await _start_client(
        lambda: AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers,
            group_id=group_id,
            client_id=client_id,
            enable_auto_commit=False,
            # A new group starts at the beginning: events published before a service's very
            # first start (e.g. while it was being installed) are still handled.
            auto_offset_reset="earliest",
            max_poll_records=settings.max_poll_records,
            session_timeout_ms=settings.session_timeout_ms,
            heartbeat_interval_ms=settings.heartbeat_interval_ms,
            # The others wait for us while we drain revoked partitions: give them the drain
            # grace plus a session's worth before they drop us from the group.
            rebalance_timeout_ms=int(settings.drain_grace_seconds * 1000)
            + settings.session_timeout_ms,
        ),
        settings=settings,
        what="kafka consumer",
        stop=stop,
    )


async def _send_dead_letter(
    publisher: Publisher, topic: str, record: Any, exc: BaseException, *, group_id: str
) -> None:
    message = str(exc)
    if len(message) > _DLQ_MESSAGE_LIMIT:
        message = message[:_DLQ_MESSAGE_LIMIT] + "…"
    # Drop dead-letter headers of an earlier failure (a replayed record), so the ones below are
    # the only ones and describe this failure.
    headers: events.Headers = [
        (name, raw) for name, raw in record.headers if not name.startswith(_DLQ_HEADER_PREFIX)
    ]
    headers += [
        (DLQ_ORIGINAL_TOPIC, record.topic.encode()),
        (DLQ_ORIGINAL_PARTITION, str(record.partition).encode()),
        (DLQ_ORIGINAL_OFFSET, str(record.offset).encode()),
        (DLQ_CONSUMER_GROUP, group_id.encode()),
        (DLQ_ERROR_TYPE, f"{type(exc).__module__}.{type(exc).__qualname__}".encode()),
        (DLQ_ERROR_MESSAGE, message.encode()),
        (DLQ_FAILED_AT, datetime.now(UTC).isoformat().encode()),
    ]
    await publisher._send(topic, record.key, record.value, headers)


# --------------------------------------------------------------------------------------------
# Helpers


def _classify(exc: KafkaError, what: str) -> TemporaryError | PermanentError:
    if isinstance(exc, KafkaConnectionError | KafkaTimeoutError) or exc.retriable:
        return TemporaryError(f"{what} failed: {type(exc).__name__}: {exc}")
    return PermanentError(f"{what} failed: {type(exc).__name__}: {exc}")


async def _start_client(
    factory: Callable[[], T], *, settings: BusSettings, what: str, stop: asyncio.Event | None
) -> T:
    """Create and start an aiokafka client, retrying while the brokers are unreachable."""

    async def attempt() -> T:
        # A client whose start failed is not reusable; a fresh one per attempt, and the failed
        # one closed so that its connections and tasks do not leak.
        client: Any = factory()
        try:
            await client.start()
        except KafkaError as exc:
            with contextlib.suppress(Exception):
                await (client.close() if hasattr(client, "close") else client.stop())
            raise _classify(exc, f"connecting to {settings.bootstrap_servers}") from exc
        return client  # type: ignore[no-any-return]

    return await retries.retry(attempt, delays=settings.connect_retry_delays, what=what, stop=stop)


def _where(coordinates: Coordinates) -> str:
    return f"{coordinates.topic}[{coordinates.partition}]@{coordinates.offset}"
