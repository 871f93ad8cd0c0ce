"""A keyed work queue: one reconcile per key at a time, duplicates folded, failures backed off.

Everything that can make a task need attention (its TaskRequested event, a change to the task,
its Job or its pods, a definition appearing, the pending timer) only *adds the task's key*.
Workers then reconcile keys, and the queue guarantees what makes that safe and cheap:

- a key is never reconciled by two workers at once, so two triggers for one task cannot race
  inside one process (replicas are kept apart by deterministic names and resourceVersions);
- a key added while it is queued is not queued twice; a key added while it is being reconciled
  is reconciled once more afterwards, so a change that arrived mid-reconcile is never missed;
- a reconcile that raises is retried after a growing delay, never in a tight loop;
- ``submit`` waits for a reconcile that *started after the call*, which is what an event handler
  needs before it lets its offset be committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class QueueStopped(RuntimeError):
    """The queue stopped before the awaited reconcile ran or finished.

    Raised to ``submit`` callers rather than cancelling them: a bus handler waiting in
    ``submit`` then fails like any handler (its record stays uncommitted and is redelivered),
    instead of being cancelled, which the bus treats as a broken partition worker.
    """


_log = logging.getLogger(__name__)


class KeyedWorkQueue(Generic[K]):
    """Reconcile keys with ``handler`` on ``workers`` concurrent workers."""

    def __init__(
        self,
        handler: Callable[[K], Awaitable[None]],
        *,
        workers: int,
        retry_delays: tuple[float, ...],
        name: str = "queue",
    ) -> None:
        self._handler = handler
        self._workers = max(1, workers)
        self._retry_delays = retry_delays or (1.0,)
        self._name = name
        self._queue: asyncio.Queue[K] = asyncio.Queue()
        self._queued: set[K] = set()
        self._running: set[K] = set()
        self._dirty: set[K] = set()
        self._waiters: dict[K, list[asyncio.Future[None]]] = {}
        self._failures: dict[K, int] = {}
        self._timers: dict[K, asyncio.TimerHandle] = {}

    def __len__(self) -> int:
        return len(self._queued) + len(self._running)

    def add(self, key: K) -> None:
        """Reconcile ``key`` soon (once, however often it is added before it starts)."""
        if key in self._running:
            self._dirty.add(key)
            return
        if key in self._queued:
            return
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._queued.add(key)
        self._queue.put_nowait(key)

    def add_after(self, key: K, delay: float) -> None:
        """Reconcile ``key`` after ``delay`` seconds, unless something adds it earlier."""
        if key in self._queued or key in self._timers:
            return
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(delay, self._fire, key)

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    async def submit(self, key: K) -> None:
        """Add ``key`` and wait until a reconcile of it that started after this call is done.

        Raises whatever that reconcile raised.
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, []).append(future)
        self.add(key)
        await future

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set; reconciles in flight are cancelled then."""
        workers = [
            asyncio.create_task(self._work(), name=f"{self._name}-worker-{n}")
            for n in range(self._workers)
        ]
        try:
            await stop.wait()
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            for timer in self._timers.values():
                timer.cancel()
            self._timers.clear()
            for futures in self._waiters.values():
                _stop_waiters(futures)
            self._waiters.clear()

    async def _work(self) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            self._running.add(key)
            waiters = self._waiters.pop(key, [])
            failed = False
            try:
                await self._handler(key)
            except asyncio.CancelledError:
                _stop_waiters(waiters)
                raise
            except Exception as exc:  # noqa: BLE001 - retried with backoff, never lost
                failed = True
                count = self._failures.get(key, 0)
                self._failures[key] = count + 1
                delay = self._retry_delays[min(count, len(self._retry_delays) - 1)]
                _log.warning(
                    "%s: reconciling %s failed (%s); again in %.1fs", self._name, key, exc, delay
                )
                for future in waiters:
                    if not future.done():
                        future.set_exception(exc)
            else:
                self._failures.pop(key, None)
                for future in waiters:
                    if not future.done():
                        future.set_result(None)
            finally:
                self._running.discard(key)
            if failed:
                self._dirty.discard(key)
                with contextlib.suppress(RuntimeError):
                    self.add_after(key, delay)
            elif key in self._dirty:
                self._dirty.discard(key)
                self.add(key)


def _stop_waiters(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(QueueStopped("the task-runner is stopping"))
