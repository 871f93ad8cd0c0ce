"""A keyed work queue: the reconcile machinery every klt service shares.

Everything that can make an object need attention (an event from the bus, a watch event, a
timer) only *adds the object's key*. Workers then reconcile keys, and the queue guarantees what
makes that safe and cheap, with client-go's workqueue semantics plus due times:

- a key is queued at most once; adding it again keeps the earlier due time;
- a key is never reconciled by two workers at once, so two triggers for one object cannot race
  inside one process (replicas are kept apart by deterministic names and resourceVersions);
- a key added while it is being reconciled is reconciled once more afterwards, so a change that
  arrived mid-reconcile is never missed;
- the handler may ask to look again later (it returns the delay in seconds, e.g. the end of a
  discovery window), and a reconcile that raises is retried after the next of the configured
  delays, per key, never in a tight loop;
- ``submit`` waits for a reconcile that *started after the call*, which is what a bus handler
  needs before it lets its offset be committed.

Nothing here survives a restart, and nothing needs to: due times are derived from cluster state
(a creationTimestamp, a deadline in a status), so a fresh process rebuilds the queue from its
watch caches.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

_log = logging.getLogger(__name__)

Handler = Callable[[K], Awaitable[float | None]]
"""Reconciles one key; returns None when done, or seconds after which to look at it again."""


class QueueStopped(RuntimeError):
    """The queue stopped before the awaited reconcile ran or finished.

    Raised to ``submit`` callers rather than cancelling them: a bus handler waiting in ``submit``
    then fails like any handler (its record stays uncommitted and is redelivered), instead of
    being cancelled, which the bus would treat as a broken partition worker.
    """


class KeyedWorkQueue(Generic[K]):
    """Reconcile keys with ``handler`` on at most ``workers`` concurrent workers."""

    def __init__(
        self,
        handler: Handler[K],
        *,
        workers: int,
        retry_delays: Sequence[float],
        name: str = "queue",
        drain_seconds: float = 0.0,
        on_failure: Callable[[K, BaseException], None] | None = None,
    ) -> None:
        self._handler = handler
        self._workers = max(1, workers)
        self._retry_delays = tuple(retry_delays) or (1.0,)
        self._name = name
        self._drain_seconds = drain_seconds
        self._on_failure = on_failure
        self._due: dict[K, float] = {}
        self._heap: list[tuple[float, int, K]] = []
        self._order = itertools.count()
        self._running: set[K] = set()
        self._dirty: dict[K, float] = {}
        self._waiters: dict[K, list[asyncio.Future[None]]] = {}
        self._failures: dict[K, int] = {}
        self._changed = asyncio.Event()
        self._stopped = False

    def __len__(self) -> int:
        return len(self._due) + len(self._running)

    def __contains__(self, key: object) -> bool:
        return key in self._due or key in self._running

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    def add(self, key: K, delay: float = 0.0) -> None:
        """Reconcile ``key`` in ``delay`` seconds, or earlier if it is already due earlier."""
        self._add_at(key, self._now() + max(0.0, delay))

    def add_after(self, key: K, delay: float) -> None:
        """Same as ``add(key, delay)``; kept for readability at timer-style call sites."""
        self.add(key, delay)

    def _add_at(self, key: K, at: float) -> None:
        if key in self._running:
            previous = self._dirty.get(key)
            self._dirty[key] = at if previous is None else min(previous, at)
            return
        previous = self._due.get(key)
        if previous is not None and previous <= at:
            return
        self._due[key] = at
        heapq.heappush(self._heap, (at, next(self._order), key))
        self._changed.set()

    async def submit(self, key: K) -> None:
        """Add ``key`` now and wait until a reconcile of it that started after this call is done.

        Raises whatever that reconcile raised, or ``QueueStopped``.
        """
        if self._stopped:
            raise QueueStopped(f"{self._name} is stopped")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, []).append(future)
        self.add(key)
        await future

    async def _next(self, stop: asyncio.Event) -> K | None:
        while not stop.is_set():
            while self._heap and self._due.get(self._heap[0][2]) != self._heap[0][0]:
                heapq.heappop(self._heap)  # superseded by an earlier due time, or handed out
            now = self._now()
            if self._heap and self._heap[0][0] <= now:
                _, _, key = heapq.heappop(self._heap)
                del self._due[key]
                self._running.add(key)
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

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set, then give in-flight reconciles ``drain_seconds``."""
        slots = asyncio.Semaphore(self._workers)
        in_flight: set[asyncio.Task[None]] = set()
        try:
            while True:
                if not await _acquire(slots, stop):
                    return
                key = await self._next(stop)
                if key is None:
                    slots.release()
                    return
                task = asyncio.create_task(self._reconcile(key), name=f"{self._name}:{key}")
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                task.add_done_callback(lambda _t: slots.release())
        finally:
            self._stopped = True
            if in_flight:
                _, pending = await asyncio.wait(set(in_flight), timeout=self._drain_seconds)
                for task in pending:
                    task.cancel()
                if pending:
                    await asyncio.wait(pending)
            for futures in self._waiters.values():
                _stop_waiters(futures, self._name)
            self._waiters.clear()

    async def _reconcile(self, key: K) -> None:
        waiters = self._waiters.pop(key, [])
        again: float | None = None
        failed = False
        try:
            again = await self._handler(key)
        except asyncio.CancelledError:
            self._running.discard(key)
            _stop_waiters(waiters, self._name)
            raise
        except Exception as exc:  # noqa: BLE001 - one key's failure must not stop the others
            failed = True
            count = self._failures.get(key, 0)
            self._failures[key] = count + 1
            again = self._retry_delays[min(count, len(self._retry_delays) - 1)]
            _log.warning(
                "%s: reconciling %s failed (attempt %d; again in %.1fs): %s",
                self._name,
                key,
                count + 1,
                again,
                exc,
            )
            if self._on_failure is not None:
                self._on_failure(key, exc)
            for future in waiters:
                if not future.done():
                    future.set_exception(exc)
        else:
            self._failures.pop(key, None)
            for future in waiters:
                if not future.done():
                    future.set_result(None)
        self._running.discard(key)
        dirty_at = self._dirty.pop(key, None)
        # After a failure only the backoff brings the key back: triggers that keep arriving
        # must not turn a failing reconcile into a tight loop.
        if dirty_at is not None and not failed:
            self._add_at(key, dirty_at)
        if again is not None:
            self.add(key, again)


async def _acquire(slots: asyncio.Semaphore, stop: asyncio.Event) -> bool:
    """Take a worker slot, unless a stop comes first (all workers may be busy for long)."""
    acquiring = asyncio.ensure_future(slots.acquire())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({acquiring, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not acquiring.done():
        acquiring.cancel()
    await asyncio.gather(acquiring, stopping, return_exceptions=True)
    if acquiring.cancelled():
        return False
    if stop.is_set():
        slots.release()
        return False
    return True


def _stop_waiters(futures: list[asyncio.Future[None]], name: str) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(QueueStopped(f"{name} is stopping"))


class KeyedLocks(Generic[K]):
    """One asyncio lock per key, created on demand and dropped when nobody holds or awaits it."""

    def __init__(self) -> None:
        self._locks: dict[K, asyncio.Lock] = {}
        self._users: dict[K, int] = {}

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
