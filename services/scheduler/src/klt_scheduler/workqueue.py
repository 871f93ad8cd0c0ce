"""Per-object serialisation: one reconcile of an object at a time, extra triggers coalesced.

Triggers for the same app or workload version arrive from many places at once: its Kafka
events, the watch events of its tasks and of its Deployment, the resync, a timer. Two passes
over one object at the same time would race on its status (the resourceVersion makes one of
them lose and retry, but it is wasted work). So every pass goes through ``Runner``:

- passes for one key run strictly one after another (a lock per key);
- a trigger that arrives while a pass runs is remembered, and one more pass runs after it; any
  number of triggers during a pass cost exactly one extra pass, because a pass that *starts*
  after a trigger covers it;
- ``run`` waits for a pass covering the trigger and raises its error (the bus handlers use
  it, so a record is committed only once its effect is in the cluster); ``kick`` starts one in
  the background and retries a failure after ``retry_delays``;
- ``at`` arranges a trigger at a given loop time (the deploy timeout), keeping the earliest.

Hints (the names of tasks an event said have finished, the generation of a newer revision)
accumulate until a pass consumes them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

_log = logging.getLogger(__name__)

Key = tuple[str, str, str]
"""(kind, namespace, name)."""


@dataclass(frozen=True)
class Hints:
    """What the triggers of a pass know that the watch caches may not show yet."""

    fresh: frozenset[str] = frozenset()
    """Names of KeptnTasks/KeptnEvaluations an event reported finished: read them live."""
    generation: int = 0
    """A KeptnApp generation seen in an event: older revisions of its version are superseded."""

    def merge(self, other: Hints) -> Hints:
        if not other.fresh and other.generation <= self.generation:
            return self
        return Hints(self.fresh | other.fresh, max(self.generation, other.generation))


NO_HINTS = Hints()


@dataclass
class _Entry:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    requested: int = 0
    done: int = 0
    hints: Hints = NO_HINTS
    users: int = 0


class Runner:
    """Runs ``work(key, hints)`` under the rules in the module docstring."""

    def __init__(
        self,
        work: Callable[[Key, Hints], Awaitable[None]],
        *,
        retry_delays: tuple[float, ...],
        limit: int,
    ) -> None:
        self._work = work
        self._retry_delays = retry_delays
        self._entries: dict[Key, _Entry] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._limit = asyncio.Semaphore(limit)
        self._closed = False

    async def run(self, key: Key, hints: Hints = NO_HINTS) -> None:
        """Wait until a pass that started after this call has finished for ``key``."""
        entry = self._entries.setdefault(key, _Entry())
        entry.requested += 1
        ticket = entry.requested
        entry.hints = entry.hints.merge(hints)
        entry.users += 1
        try:
            async with entry.lock:
                if entry.done >= ticket:
                    return  # a pass that started after our trigger has already run
                cover, taken = entry.requested, entry.hints
                entry.hints = NO_HINTS
                try:
                    await self._work(key, taken)
                except BaseException:
                    entry.hints = entry.hints.merge(taken)
                    raise
                entry.done = cover
        finally:
            entry.users -= 1
            if entry.users == 0:
                self._entries.pop(key, None)

    def kick(self, key: Key, hints: Hints = NO_HINTS, *, attempt: int = 0) -> None:
        """Reconcile ``key`` in the background; failures are retried, then left to the resync."""
        if self._closed:
            return
        task = asyncio.create_task(self._background(key, hints, attempt), name=f"reconcile:{key}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _background(self, key: Key, hints: Hints, attempt: int) -> None:
        try:
            async with self._limit:
                await self.run(key, hints)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a background pass must not die silently
            if attempt < len(self._retry_delays) and not self._closed:
                delay = self._retry_delays[attempt]
                _log.warning("reconcile of %s failed (%s); again in %.1fs", key, exc, delay)
                loop = asyncio.get_running_loop()
                loop.call_later(delay, lambda: self.kick(key, hints, attempt=attempt + 1))
            else:
                _log.exception("reconcile of %s failed; leaving it to the resync", key)

    def at(self, key: Key, when: float) -> None:
        """Trigger ``key`` at loop time ``when`` (an earlier pending trigger wins)."""
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        current = self._timers.get(key)
        if current is not None and not current.cancelled() and current.when() <= when:
            return
        if current is not None:
            current.cancel()

        def fire() -> None:
            self._timers.pop(key, None)
            self.kick(key)

        self._timers[key] = loop.call_at(when, fire)

    def forget(self, key: Key) -> None:
        """Drop the timer of an object that no longer needs one."""
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    @property
    def busy(self) -> int:
        """Background passes in flight (for tests and metrics)."""
        return len(self._tasks)

    async def close(self, grace: float) -> None:
        """Stop accepting triggers, cancel timers, let running passes finish for ``grace`` s."""
        self._closed = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
