"""Wall-clock helpers: ``metav1.Time`` text, and waiting that a stop event can cut short."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from datetime import UTC, datetime
from typing import Any


def parse_time(text: str | None) -> datetime | None:
    """A ``metav1.Time`` (RFC 3339) as an aware UTC datetime; None when absent or unreadable."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return None


def format_time(moment: datetime) -> str:
    """RFC 3339 with milliseconds: enough to schedule from, still a valid ``metav1.Time``."""
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


async def wait_or_stop(
    awaitable: Awaitable[Any], stop: asyncio.Event, timeout: float | None = None
) -> None:
    """Wait for ``awaitable`` or ``stop``, whichever comes first (or ``timeout``)."""
    task = asyncio.ensure_future(awaitable)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (task, stopper):
            if not pending.done():
                pending.cancel()
        await asyncio.gather(task, stopper, return_exceptions=True)


async def stop_runners(
    followers: list[asyncio.Task[None]],
    wakes: Iterable[asyncio.Event],
    runners: Iterable[asyncio.Task[None]],
    grace: float,
) -> None:
    """Shut down a set of per-object runners: stop following watches, wake every runner so it
    sees the stop, give them ``grace`` seconds to finish their current step, then cancel."""
    for task in followers:
        task.cancel()
    for wake in wakes:
        wake.set()
    runners = list(runners)
    active = [t for t in runners if not t.done()]
    if active:
        _, pending = await asyncio.wait(active, timeout=grace)
        for straggler in pending:
            straggler.cancel()
    await asyncio.gather(*followers, *runners, return_exceptions=True)
