"""The shared keyed work queue: one reconcile per key at a time, folded duplicates, the
earliest due time, handler-requested delays, backed-off retries, and per-key locks."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from klt_common.aiokits.workqueue import KeyedLocks, KeyedWorkQueue, QueueStopped


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


async def test_a_key_keeps_its_earliest_due_time_and_comes_out_in_due_order(
    running: Callable[[KeyedWorkQueue[str]], Awaitable[None]],
) -> None:
    seen: list[str] = []

    async def handle(key: str) -> None:
        seen.append(key)

    queue: KeyedWorkQueue[str] = KeyedWorkQueue(handle, workers=1, retry_delays=(0.01,))
    await running(queue)
    queue.add("late", 0.1)
    queue.add("a", 10)
    queue.add("a", 0.05)
    queue.add("a", 5)
    assert len(queue) == 2
    await asyncio.sleep(0.2)
    assert seen == ["a", "late"]


async def test_a_handler_can_ask_to_look_again_later(
    running: Callable[[KeyedWorkQueue[str]], Awaitable[None]],
) -> None:
    times: list[float] = []
    loop = asyncio.get_running_loop()

    async def handle(key: str) -> float | None:
        times.append(loop.time())
        return 0.05 if len(times) == 1 else None

    queue: KeyedWorkQueue[str] = KeyedWorkQueue(handle, workers=1, retry_delays=(0.01,))
    await running(queue)
    queue.add("window")
    await asyncio.sleep(0.2)
    assert len(times) == 2
    assert times[1] - times[0] >= 0.045


async def test_keyed_locks_serialise_one_key_and_are_dropped_when_free() -> None:
    locks: KeyedLocks[str] = KeyedLocks()
    order: list[str] = []

    async def work(name: str, key: str) -> None:
        async with locks.hold(key):
            order.append(f"{name}+")
            await asyncio.sleep(0.02)
            order.append(f"{name}-")

    await asyncio.gather(work("a", "k"), work("b", "k"), work("c", "other"))
    assert order.index("a-") < order.index("b+") or order.index("b-") < order.index("a+")
    assert len(locks) == 0


async def test_keyed_locks_are_released_when_the_holder_fails() -> None:
    locks: KeyedLocks[str] = KeyedLocks()
    with pytest.raises(RuntimeError):
        async with locks.hold("k"):
            raise RuntimeError("boom")
    assert len(locks) == 0
    async with locks.hold("k"):
        pass
