"""The machinery behind ``bus.Consumer``: fetch loop, partition workers, committer, rebalances.

Private to ``clients.bus``, which owns decoding, dispatch and dead-letter publishing and hands
them in as two callbacks. This module only knows Kafka records, partitions and offsets, and it
keeps three promises (see ``clients.bus`` for the whole contract):

- records of one partition are handled one after another, in offset order, by that partition's
  worker task; partitions are independent;
- an offset is committed only once its record is done (handled, dead-lettered or skipped);
- a partition is given up (revocation, stop) only after the record in hand is done or the
  grace ran out, and after the offsets of what was done are committed.

Workers are long-lived per assignment (not per record) and are owned here: each is stopped and
awaited when its partition is revoked or the consumer stops, so nothing outlives the runner.

Given a ``GroupMetrics``, the runner also reports each assigned partition's lag (see
``observability.bus_metrics``) from a small task of its own, so measuring never delays a fetch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Iterable
from typing import Any, Protocol

from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from klt_common.aiokits import retry as retries
from klt_common.aiokits.errors import PermanentError, TemporaryError
from klt_common.configs.settings import BusSettings
from klt_common.observability.bus_metrics import GroupMetrics
from klt_common.structs import events

_log = logging.getLogger("klt_common.clients.bus")

_POLL_TIMEOUT_MS = 1000
"""How long one fetch waits for records. Records are returned as soon as they arrive and
stopping cancels the fetch, so this only sets the period of an idle loop."""

_DEAD_LETTER_RETRY_DELAY = 1.0
"""Seconds between attempts to write a dead letter. The producer has already retried for
``request_timeout_ms`` by then: Kafka itself is unwell, and the partition waits for it."""

# aiokafka is untyped; these name what the runner expects of its objects.
TopicPartition = Any
ConsumerRecord = Any


class Dispatch(Protocol):
    """Decodes and handles one record. Raising means: dead-letter it (unless stopping)."""

    def __call__(self, record: ConsumerRecord, *, stop: asyncio.Event) -> Awaitable[None]: ...


DeadLetter = Callable[[ConsumerRecord, BaseException], Awaitable[None]]
"""Copies a record that could not be handled to the dead-letter topic, with the reason."""


class Runner:
    """Runs one subscribed, started ``AIOKafkaConsumer`` until stopped."""

    def __init__(
        self,
        consumer: Any,
        *,
        settings: BusSettings,
        dispatch: Dispatch,
        dead_letter: DeadLetter,
        metrics: GroupMetrics | None = None,
    ) -> None:
        self._consumer = consumer
        self._settings = settings
        self._dispatch = dispatch
        self._dead_letter = dead_letter
        self._metrics = metrics
        self._workers: dict[TopicPartition, _Worker] = {}
        self._committer = _Committer(consumer)
        self._crashed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.listener = _Listener(self)
        """Pass to ``consumer.subscribe``: drains and commits partitions before they go."""

    async def run(self, stop: asyncio.Event) -> None:
        """Fetch and dispatch until ``stop`` is set, then drain and commit everything."""
        committer = asyncio.create_task(self._committer.run(), name="bus-committer")
        committer.add_done_callback(self._watch)
        fetcher = asyncio.create_task(self._fetch_loop(), name="bus-fetcher")
        stopper = asyncio.create_task(stop.wait(), name="bus-stop")
        helpers = [fetcher, stopper]
        if self._metrics is not None:
            helpers.append(asyncio.create_task(self._lag_loop(self._metrics), name="bus-lag"))
        waited: set[asyncio.Future[Any]] = {fetcher, stopper, self._crashed}
        try:
            await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # NB: cancelling the fetcher is safe: its only await is the fetch itself, and records
            # reach the workers synchronously once fetched, so none can be half-delivered.
            for task in helpers:
                task.cancel()
            await asyncio.wait(helpers)
            workers = list(self._workers.values())
            self._workers.clear()
            await self._drain(workers)
            await self._committer.close(committer)
            if self._metrics is not None:
                self._metrics.drop_all_lag()
        if not fetcher.cancelled() and (exc := fetcher.exception()) is not None:
            raise exc
        if self._crashed.done():
            self._crashed.result()  # raises what broke a worker or the committer

    async def release(self, partitions: Collection[TopicPartition]) -> None:
        """Finish and commit the given partitions; called before the group rebalances."""
        workers = [self._workers.pop(tp) for tp in list(self._workers) if tp in partitions]
        await self._drain(workers)
        await self._committer.commit(only=partitions)
        if self._metrics is not None:
            for tp in partitions:
                self._metrics.drop_lag(tp.topic, tp.partition)

    async def _fetch_loop(self) -> None:
        consumer = self._consumer
        limit = self._settings.max_poll_records
        while True:
            # aiokafka returns nothing while a rebalance is in progress and drops fetched records
            # of revoked partitions, and between this await and the loop below nothing else
            # runs: every record handed to a worker belongs to the current assignment.
            batches = await consumer.getmany(timeout_ms=_POLL_TIMEOUT_MS)
            for tp, records in batches.items():
                worker = self._workers.get(tp)
                if worker is None:
                    worker = self._workers[tp] = _Worker(self, tp)
                worker.extend(records)
                # Bound memory and the work thrown away at a revocation: a partition whose
                # worker lags stops being fetched until its backlog is done.
                if worker.backlog >= limit:
                    consumer.pause(tp)

    async def _lag_loop(self, metrics: GroupMetrics) -> None:
        while True:
            await asyncio.sleep(self._settings.lag_interval_seconds)
            try:
                await self._measure_lag(metrics)
            except Exception:  # noqa: BLE001 - a gauge must never stop consumption
                _log.exception("measuring consumer lag failed")

    async def _measure_lag(self, metrics: GroupMetrics) -> None:
        consumer = self._consumer
        for tp in list(consumer.assignment()):
            # Checked again after every await: a rebalance may have taken the partition.
            if tp not in consumer.assignment():
                continue
            # The high watermark arrives with every fetch response, records or not; it is
            # unknown only until the partition's first fetch, and dates from the last fetch
            # while the partition is paused (its backlog then shows in ``unhandled``).
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            try:
                # Local once the start offset is known; waits only right after assignment.
                position = await consumer.position(tp)
            except IllegalStateError:
                continue  # revoked meanwhile
            worker = self._workers.get(tp)
            # The position is past everything fetched; what was fetched but is not done yet
            # sits with the partition's worker.
            unhandled = worker.unhandled if worker is not None else 0
            metrics.set_lag(tp.topic, tp.partition, max(0, highwater - position) + unhandled)

    async def _handle(self, record: ConsumerRecord, stop: asyncio.Event) -> bool:
        """Handle one record; True when it is done and its offset may be committed."""
        try:
            await self._dispatch(record, stop=stop)
        except Exception as exc:  # noqa: BLE001 - any handler failure is dead-lettered, not fatal
            if stop.is_set():
                _log.info(
                    "abandoning %s (partition released); its next owner retries it: %s",
                    _where(record),
                    exc,
                )
                return False
            # A traceback helps with bugs, not with errors raised on purpose or with bad input.
            expected = isinstance(exc, TemporaryError | PermanentError | events.EventDecodeError)
            _log.error(
                "giving up on %s, sending it to the dead-letter topic: %s: %s",
                _where(record),
                type(exc).__name__,
                exc,
                exc_info=None if expected else exc,
            )
            return await self._dead_letter_until_sent(record, exc, stop)
        return True

    async def _dead_letter_until_sent(
        self, record: ConsumerRecord, exc: BaseException, stop: asyncio.Event
    ) -> bool:
        while True:
            try:
                await self._dead_letter(record, exc)
            except Exception:  # noqa: BLE001 - logged with its traceback, retried below
                _log.exception("cannot write the dead letter for %s; retrying", _where(record))
                if await retries.sleep_or_stop(_DEAD_LETTER_RETRY_DELAY, stop):
                    return False
            else:
                return True

    def _resume(self, tp: TopicPartition) -> None:
        # The partition may have been revoked meanwhile; its pause state went with it.
        with contextlib.suppress(IllegalStateError):
            if tp in self._consumer.paused():
                self._consumer.resume(tp)

    async def _drain(self, workers: Iterable[_Worker]) -> None:
        workers = list(workers)
        dropped = sum(worker.stop() for worker in workers)
        tasks = [worker.task for worker in workers if not worker.task.done()]
        if dropped:
            _log.debug("dropped %d fetched records not yet started; they stay uncommitted", dropped)
        if not tasks:
            return
        grace = self._settings.drain_grace_seconds
        _, pending = await asyncio.wait(tasks, timeout=grace)
        if pending:
            _log.warning(
                "%d handlers still running after %.1fs; cancelling them (their records will be "
                "redelivered)",
                len(pending),
                grace,
            )
            for task in pending:
                task.cancel()
            await asyncio.wait(pending)

    def _watch(self, task: asyncio.Task[Any]) -> None:
        """Turn a crashed worker or committer into a crash of the whole runner."""
        if task.cancelled() or task.exception() is None:
            return
        self._fail(task.get_name(), task.exception())  # type: ignore[arg-type]

    def _fail(self, what: str, exc: BaseException) -> None:
        # A dead worker would silently stall its partition forever; a dead committer would stop
        # all progress from being recorded. Neither is survivable: stop the runner, loudly.
        _log.error("%s crashed", what, exc_info=exc)
        if not self._crashed.done():
            self._crashed.set_exception(exc)


class _Worker:
    """Handles one partition's records in order, one at a time."""

    def __init__(self, runner: Runner, tp: TopicPartition) -> None:
        self._runner = runner
        self._tp = tp
        self._queue: deque[ConsumerRecord] = deque()
        self._in_hand = False
        self._wakeup = asyncio.Event()
        self._stop = asyncio.Event()
        self.task = asyncio.create_task(self._run(), name=f"bus-partition:{_tp_name(tp)}")
        self.task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() and not self._stop.is_set():
            # Only a drain may cancel a worker; anything else (a handler cancelling its own
            # task, say) would leave the partition without a worker.
            self._runner._fail(task.get_name(), RuntimeError("partition worker was cancelled"))
        else:
            self._runner._watch(task)

    @property
    def backlog(self) -> int:
        return len(self._queue)

    @property
    def unhandled(self) -> int:
        """Records fetched for this partition and not done: the queue and the one in hand."""
        return len(self._queue) + self._in_hand

    def extend(self, records: Iterable[ConsumerRecord]) -> None:
        self._queue.extend(records)
        self._wakeup.set()

    def stop(self) -> int:
        """Finish the record in hand, drop the rest; returns how many were dropped."""
        dropped = len(self._queue)
        self._queue.clear()
        self._stop.set()
        self._wakeup.set()
        return dropped

    async def _run(self) -> None:
        runner = self._runner
        while not self._stop.is_set():
            if not self._queue:
                runner._resume(self._tp)
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            record = self._queue.popleft()
            self._in_hand = True
            try:
                done = await runner._handle(record, self._stop)
            finally:
                self._in_hand = False
            if done:
                runner._committer.mark(self._tp, record.offset + 1)


class _Committer:
    """Commits done offsets in the background, coalescing what accumulates meanwhile.

    Every commit takes its snapshot under one lock, so commits (background, at revocation, at
    stop) never overtake each other and an offset never moves backwards.
    """

    def __init__(self, consumer: Any) -> None:
        self._consumer = consumer
        self._pending: dict[TopicPartition, int] = {}
        self._lock = asyncio.Lock()
        self._wakeup = asyncio.Event()
        self._closing = False

    def mark(self, tp: TopicPartition, next_offset: int) -> None:
        self._pending[tp] = next_offset
        self._wakeup.set()

    async def run(self) -> None:
        while not self._closing:
            await self._wakeup.wait()
            self._wakeup.clear()
            await self.commit()

    async def close(self, task: asyncio.Task[None]) -> None:
        """Stop the background loop, then commit whatever is left."""
        self._closing = True
        self._wakeup.set()
        await asyncio.wait({task})
        await self.commit()

    async def commit(self, *, only: Collection[TopicPartition] | None = None) -> None:
        async with self._lock:
            offsets = {
                tp: offset for tp, offset in self._pending.items() if only is None or tp in only
            }
            for tp in offsets:
                del self._pending[tp]
            assigned = self._consumer.assignment()
            gone = [tp for tp in offsets if tp not in assigned]
            for tp in gone:
                del offsets[tp]
            if gone:
                _log.warning(
                    "partitions %s left before their offsets were committed; their last "
                    "records will be redelivered",
                    ", ".join(map(_tp_name, gone)),
                )
            if not offsets:
                return
            try:
                await self._consumer.commit(offsets)
            except (CommitFailedError, IllegalStateError) as exc:
                # The group moved on without us (e.g. we missed heartbeats): the partitions
                # belong to someone else now, who starts from the last successful commit.
                _log.warning("commit refused, the group has rebalanced: %s", exc)
            except KafkaError as exc:
                _log.warning("commit failed, retrying with the next one: %s", exc)
                for tp, offset in offsets.items():
                    if self._pending.get(tp, -1) < offset:
                        self._pending[tp] = offset
            else:
                _log.debug("committed %s", offsets)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """aiokafka awaits these before the group re-forms and after it has."""

    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    async def on_partitions_revoked(self, revoked: Collection[TopicPartition]) -> None:
        if revoked:
            _log.info("partitions revoked: %s", ", ".join(sorted(map(_tp_name, revoked))))
        await self._runner.release(set(revoked))

    async def on_partitions_assigned(self, assigned: Collection[TopicPartition]) -> None:
        _log.info("partitions assigned: %s", ", ".join(sorted(map(_tp_name, assigned))) or "none")


def _tp_name(tp: TopicPartition) -> str:
    return f"{tp.topic}[{tp.partition}]"


def _where(record: ConsumerRecord) -> str:
    return f"{record.topic}[{record.partition}]@{record.offset}"
