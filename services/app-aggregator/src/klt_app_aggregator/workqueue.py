"""A keyed delay queue and per-key locks: the aggregator's reconcile machinery.

The queue follows client-go's workqueue semantics, plus a due time per key:

- a key is queued at most once; adding it again keeps the earlier due time;
- a key is handed to one worker at a time; adding it while it is being processed marks it
  dirty, and it is queued again when the worker is done, so a change that arrives mid-work is
  never lost and never handled concurrently with itself;
- the handler says when to look again (a discovery window that has not ended), and failures
  are retried after a backoff, per key, that resets on success.

Timers are therefore not kept anywhere but here, and nothing here needs to survive a restart:
each due time is computed from cluster state (a creationTimestamp, a pod's age), and a fresh
process re-derives the whole queue from its watch caches.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from klt_common.aiokits.tasks import TaskPool

K = TypeVar("K", bound=Hashable)

_log = logging.getLogger(__name__)

Handler = Callable[[K], Awaitable[float | None]]
"""Handles one key; returns None when done, or seconds after which to look at it again."""


@dataclass
class WorkQueue(Generic[K]):
    """Keys with due times, handed out in due order (see the module docstring)."""

    _due: dict[K, float] = field(default_factory=dict)
    _heap: list[tuple[float, int, K]] = field(default_factory=list)
    _processing: set[K] = field(default_factory=set)
    _dirty: dict[K, float] = field(default_factory=dict)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _order: itertools.count[int] = field(default_factory=itertools.count)

    def __len__(self) -> int:
        return len(self._due)

    def __contains__(self, key: object) -> bool:
        return key in self._due

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    def add(self, key: K, delay: float = 0.0) -> None:
        """Queue ``key`` to be handled ``delay`` seconds from now (or earlier if queued so)."""
        self._add_at(key, self._now() + max(0.0, delay))

    def _add_at(self, key: K, at: float) -> None:
        if key in self._processing:
            previous = self._dirty.get(key)
            self._dirty[key] = at if previous is None else min(previous, at)
            return
        previous = self._due.get(key)
        if previous is not None and previous <= at:
            return
        self._due[key] = at
        heapq.heappush(self._heap, (at, next(self._order), key))
        self._changed.set()

    def done(self, key: K) -> None:
        """The worker finished ``key``; requeue it if it was added meanwhile."""
        self._processing.discard(key)
        at = self._dirty.pop(key, None)
        if at is not None:
            self._add_at(key, at)

    async def get(self, stop: asyncio.Event) -> K | None:
        """Wait for the next due key (now marked as processing); None once ``stop`` is set."""
        while not stop.is_set():
            while self._heap and self._due.get(self._heap[0][2]) != self._heap[0][0]:
                heapq.heappop(self._heap)  # superseded by an earlier due time, or handed out
            now = self._now()
            if self._heap and self._heap[0][0] <= now:
                _, _, key = heapq.heappop(self._heap)
                del self._due[key]
                self._processing.add(key)
                return key
            timeout = self._heap[0][0] - now if self._heap else None
            self._changed.clear()
            changed = asyncio.ensure_future(self._changed.wait())
            stopped = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait(
                    {changed, stopped}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                changed.cancel()
                stopped.cancel()
                await asyncio.gather(changed, stopped, return_exceptions=True)
        return None


@dataclass
class Dispatcher(Generic[K]):
    """Runs a ``WorkQueue`` with a bounded pool of workers and per-key retry backoff."""

    queue: WorkQueue[K]
    handler: Handler[K]
    workers: int
    retry_delays: Sequence[float]
    drain_seconds: float
    on_failure: Callable[[K, BaseException], None] | None = None
    _attempts: dict[K, int] = field(default_factory=dict)

    async def run(self, stop: asyncio.Event) -> None:
        pool = TaskPool("reconcile", limit=self.workers)
        try:
            while True:
                key = await self.queue.get(stop)
                if key is None:
                    return
                await pool.spawn(str(key), self._handle(key))
        finally:
            await pool.drain(self.drain_seconds)

    async def _handle(self, key: K) -> None:
        again: float | None = None
        try:
            again = await self.handler(key)
        except asyncio.CancelledError:
            self.queue.done(key)
            raise
        except Exception as exc:  # noqa: BLE001 - one item's failure must not stop the others
            attempt = self._attempts.get(key, 0)
            self._attempts[key] = attempt + 1
            delays = self.retry_delays or (1.0,)
            again = delays[min(attempt, len(delays) - 1)]
            _log.warning("reconciling %s failed (attempt %d): %s", key, attempt + 1, exc)
            if self.on_failure is not None:
                self.on_failure(key, exc)
        else:
            self._attempts.pop(key, None)
        self.queue.done(key)
        if again is not None:
            self.queue.add(key, again)


@dataclass
class KeyedLocks(Generic[K]):
    """One asyncio lock per key, created on demand and dropped when nobody holds or awaits it."""

    _locks: dict[K, asyncio.Lock] = field(default_factory=dict)
    _users: dict[K, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self._locks)

    @contextlib.asynccontextmanager
    async def hold(self, key: K) -> AsyncIterator[None]:
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._users[key] = self._users.get(key, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._users[key] -= 1
            if self._users[key] == 0:
                del self._users[key]
                del self._locks[key]
