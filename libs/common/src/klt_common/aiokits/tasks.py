"""Supervised tasks and staged shutdown.

Every long-lived loop in a klt service is a *root task*: named, started through
``guarded``, logged when it crashes or (unexpectedly) returns, and never left unowned.
``run_until_stopped`` is the one place where root tasks are awaited: it waits until either a
stop is requested or any root task ends, then stops the rest in order. Short-lived work that a
root task spawns goes through a ``TaskPool`` so it is awaited (or cancelled) at shutdown too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

_log = logging.getLogger(__name__)


async def guarded(
    name: str, coro: Awaitable[None], *, may_return: bool | Callable[[], bool] = False
) -> None:
    """Run a root task's body, logging how it ended. Cancellation is always re-raised.

    ``may_return`` says whether returning is expected (a callable is asked at return time, so
    a loop that ends because a stop was requested is not reported as a surprise).
    """
    try:
        await coro
    except asyncio.CancelledError:
        _log.debug("task %s cancelled", name)
        raise
    except Exception:
        _log.exception("task %s crashed", name)
        raise
    else:
        if not (may_return() if callable(may_return) else may_return):
            _log.warning("task %s returned, though it should run until stopped", name)


def create_guarded_task(
    name: str, coro: Coroutine[Any, Any, None], *, may_return: bool | Callable[[], bool] = False
) -> asyncio.Task[None]:
    """Start ``coro`` as a named, guarded task."""
    return asyncio.create_task(guarded(name, coro, may_return=may_return), name=name)


@dataclass
class TaskPool:
    """Owner for short-lived tasks, with an optional concurrency limit.

    Handlers that fan out (one coroutine per message, per object) spawn through a pool, so that
    shutdown can drain what is in flight and nothing is fire-and-forget.
    """

    name: str
    limit: int | None = None
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    _sem: asyncio.Semaphore | None = None

    def __post_init__(self) -> None:
        if self.limit is not None:
            self._sem = asyncio.Semaphore(self.limit)

    def __len__(self) -> int:
        return len(self._tasks)

    async def spawn(self, name: str, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Start ``coro``; waits for a free slot first when the pool is limited."""
        if self._sem is not None:
            await self._sem.acquire()
        task = asyncio.create_task(coro, name=f"{self.name}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if self._sem is not None:
            self._sem.release()
        if not task.cancelled() and (exc := task.exception()) is not None:
            _log.error("task %s failed", task.get_name(), exc_info=exc)

    async def drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for in-flight tasks, then cancel the rest."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            _log.warning("pool %s: cancelled %d tasks still running", self.name, len(pending))
            await asyncio.wait(pending)


@dataclass(frozen=True)
class RootTask:
    """A named root task body, started by ``run_until_stopped``."""

    name: str
    factory: Callable[[], Coroutine[Any, Any, None]]


async def run_until_stopped(
    roots: Sequence[RootTask],
    *,
    stop: asyncio.Event,
    stop_timeout: float,
) -> None:
    """Run root tasks until ``stop`` is set or any of them ends, then stop them all.

    Root tasks are expected to notice ``stop`` themselves and finish their in-flight work (that is
    the graceful part); whatever is still running after ``stop_timeout`` seconds is cancelled.
    Errors of root tasks that crashed are re-raised at the end, after everything has stopped,
    so that a crash never leaves sibling loops running behind it.
    """
    tasks = [create_guarded_task(r.name, r.factory(), may_return=stop.is_set) for r in roots]
    stop_waiter = asyncio.create_task(stop.wait(), name="stop-flag")
    try:
        await asyncio.wait([*tasks, stop_waiter], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.set()
        stop_waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stop_waiter
        _, pending = await asyncio.wait(tasks, timeout=stop_timeout) if tasks else (set(), set())
        for task in pending:
            _log.warning(
                "root task %s did not stop in %.1fs; cancelling", task.get_name(), stop_timeout
            )
            task.cancel()
        if pending:
            await asyncio.wait(pending)
    errors = [t.exception() for t in tasks if not t.cancelled() and t.exception() is not None]
    if errors:
        first = errors[0]
        assert first is not None
        raise first
