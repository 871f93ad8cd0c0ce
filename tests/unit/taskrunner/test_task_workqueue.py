"""The keyed work queue: one reconcile per key at a time, folded duplicates, backed-off retries."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from klt_task_runner.workqueue import KeyedWorkQueue, QueueStopped


@pytest.fixture
async def running() -> AsyncIterator[Callable[[KeyedWorkQueue[str]], Awaitable[None]]]:
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []

    async def start(queue: KeyedWorkQueue[str]) -> None:
        tasks.append(asyncio.create_task(queue.run(stop)))
        await asyncio.sleep(0)

    yield start
    stop.set()
    await asyncio.gather(*tasks)


async def test_a_key_is_never_handled_twice_at_once_and_a_late_add_is_not_lost(
    running: Callable[[KeyedWorkQueue[str]], Awaitable[None]],
) -> None:
    active: set[str] = set()
    calls: list[str] = []
    overlap = False
    gate = asyncio.Event()

    async def handle(key: str) -> None:
        nonlocal overlap
        overlap = overlap or key in active
        active.add(key)
        calls.append(key)
        await gate.wait()
        active.discard(key)

    queue: KeyedWorkQueue[str] = KeyedWorkQueue(handle, workers=4, retry_delays=(0.01,))
    await running(queue)
    queue.add("a")
    await asyncio.sleep(0.01)
    for _ in range(5):
        queue.add("a")  # while running: folded into one more run
    gate.set()
    await asyncio.sleep(0.05)
    assert calls == ["a", "a"]
    assert not overlap


async def test_submit_waits_for_a_run_that_started_after_it_and_sees_its_error(
    running: Callable[[KeyedWorkQueue[str]], Awaitable[None]],
) -> None:
    outcomes = iter([RuntimeError("apiserver down"), None])

    async def handle(key: str) -> None:
        result = next(outcomes)
        if result is not None:
            raise result

    queue: KeyedWorkQueue[str] = KeyedWorkQueue(handle, workers=1, retry_delays=(0.01,))
    await running(queue)
    with pytest.raises(RuntimeError, match="apiserver down"):
        await queue.submit("k")
    await asyncio.wait_for(queue.submit("k"), 1)


async def test_failures_are_retried_with_growing_delays(
    running: Callable[[KeyedWorkQueue[str]], Awaitable[None]],
) -> None:
    times: list[float] = []
    loop = asyncio.get_running_loop()

    async def handle(key: str) -> None:
        times.append(loop.time())
        if len(times) < 4:
            raise RuntimeError("not yet")

    queue: KeyedWorkQueue[str] = KeyedWorkQueue(handle, workers=2, retry_delays=(0.02, 0.05, 0.1))
    await running(queue)
    queue.add("k")
    for _ in range(100):
        if len(times) == 4:
            break
        await asyncio.sleep(0.01)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(times) == 4
    assert gaps[0] >= 0.015
    assert gaps[1] >= 0.045
    assert gaps[2] >= 0.095
    await asyncio.sleep(0.15)
    assert len(times) == 4  # success ends the retries


async def test_stopping_fails_waiting_submitters_instead_of_cancelling_them() -> None:
    """A bus handler waiting in submit must fail (record redelivered later), not be cancelled
    (which the bus treats as a broken partition worker)."""
    started = asyncio.Event()

    async def handle(key: str) -> None:
        started.set()
        await asyncio.sleep(10)

    queue: KeyedWorkQueue[str] = KeyedWorkQueue(handle, workers=1, retry_delays=(0.01,))
    stop = asyncio.Event()
    runner = asyncio.create_task(queue.run(stop))
    waiting = asyncio.create_task(queue.submit("busy"))
    queued = asyncio.create_task(queue.submit("later"))
    await started.wait()
    stop.set()
    await runner
    with pytest.raises(QueueStopped):
        await waiting
    with pytest.raises(QueueStopped):
        await queued
