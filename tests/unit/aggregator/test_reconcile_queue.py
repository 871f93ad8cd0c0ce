"""The keyed delay queue, its dispatcher and the per-key locks (client-go workqueue semantics
plus due times): one entry per key, the earliest due time wins, a key re-added while being
handled is handled again afterwards, failures back off per key, and locks do not leak."""

from __future__ import annotations

import asyncio

import pytest

from klt_app_aggregator.workqueue import Dispatcher, KeyedLocks, WorkQueue


async def _get(queue: WorkQueue[str], timeout: float = 1.0) -> str | None:
    stop = asyncio.Event()
    try:
        return await asyncio.wait_for(queue.get(stop), timeout)
    except TimeoutError:
        return None


async def test_a_key_is_queued_once_with_its_earliest_due_time() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a", 10)
    queue.add("a", 0)
    queue.add("a", 5)
    assert len(queue) == 1
    assert await _get(queue, 0.5) == "a"
    assert await _get(queue, 0.1) is None


async def test_keys_come_out_in_due_order_and_not_before() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("late", 0.2)
    queue.add("early", 0.05)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await _get(queue) == "early"
    assert await _get(queue) == "late"
    assert loop.time() - started >= 0.2


async def test_an_earlier_add_wakes_a_waiting_get() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("slow", 30)
    waiter = asyncio.create_task(_get(queue, 2))
    await asyncio.sleep(0.05)
    queue.add("fast")
    assert await waiter == "fast"


async def test_a_key_added_while_processing_is_handed_out_again_after_done() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    assert await _get(queue) == "a"
    queue.add("a")  # a change arrives while "a" is being handled
    assert await _get(queue, 0.1) is None  # never concurrently with itself
    queue.done("a")
    assert await _get(queue) == "a"


async def test_get_returns_none_once_stopped() -> None:
    queue: WorkQueue[str] = WorkQueue()
    stop = asyncio.Event()
    waiter = asyncio.create_task(queue.get(stop))
    await asyncio.sleep(0.01)
    stop.set()
    assert await asyncio.wait_for(waiter, 1) is None


async def test_the_dispatcher_retries_failures_with_backoff_and_honours_requested_delays() -> None:
    queue: WorkQueue[str] = WorkQueue()
    calls: list[tuple[str, float]] = []
    loop = asyncio.get_running_loop()
    failures: list[str] = []

    async def handler(key: str) -> float | None:
        calls.append((key, loop.time()))
        if key == "flaky" and sum(1 for k, _ in calls if k == "flaky") < 3:
            raise RuntimeError("apiserver down")
        if key == "later" and sum(1 for k, _ in calls if k == "later") == 1:
            return 0.1  # "not due yet, look again in 0.1 s"
        return None

    dispatcher = Dispatcher(
        queue,
        handler,
        workers=2,
        retry_delays=(0.05, 0.1),
        drain_seconds=1,
        on_failure=lambda key, _exc: failures.append(key),
    )
    stop = asyncio.Event()
    runner = asyncio.create_task(dispatcher.run(stop))
    queue.add("flaky")
    queue.add("later")
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.wait_for(runner, 2)
    flaky = [t for k, t in calls if k == "flaky"]
    later = [t for k, t in calls if k == "later"]
    assert len(flaky) == 3
    assert flaky[1] - flaky[0] >= 0.05
    assert flaky[2] - flaky[1] >= 0.1
    assert failures == ["flaky", "flaky"]
    assert len(later) == 2
    assert later[1] - later[0] >= 0.1
    assert not dispatcher._attempts  # reset after success


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
