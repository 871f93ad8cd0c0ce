"""Retries walk the configured delays; supervised root tasks stop together."""

from __future__ import annotations

import asyncio

import pytest

from klt_common.aiokits.errors import PermanentError, TemporaryError
from klt_common.aiokits.retry import retry, sleep_or_stop
from klt_common.aiokits.tasks import RootTask, TaskPool, run_until_stopped


async def test_temporary_errors_are_retried_once_per_delay() -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise TemporaryError("not yet")
        return "done"

    assert await retry(flaky, delays=(0.0, 0.0, 0.0), what="flaky") == "done"
    assert calls == 3


async def test_the_last_error_is_raised_when_delays_run_out() -> None:
    calls = 0

    async def always() -> None:
        nonlocal calls
        calls += 1
        raise TemporaryError(f"attempt {calls}")

    with pytest.raises(TemporaryError, match="attempt 3"):
        await retry(always, delays=(0.0, 0.0), what="always")


async def test_permanent_and_unclassified_errors_are_not_retried() -> None:
    calls = 0

    async def broken() -> None:
        nonlocal calls
        calls += 1
        raise PermanentError("bad input")

    with pytest.raises(PermanentError):
        await retry(broken, delays=(0.0, 0.0), what="broken")
    assert calls == 1

    async def surprising() -> None:
        raise ValueError("bug")

    with pytest.raises(ValueError, match="bug"):
        await retry(surprising, delays=(0.0,), what="surprising")


async def test_a_stop_request_cuts_a_retry_wait_short() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, stop.set)
    started = loop.time()
    assert await sleep_or_stop(30, stop) is True
    assert loop.time() - started < 5


async def test_a_crashing_root_task_stops_its_siblings_and_reraises() -> None:
    stop = asyncio.Event()
    sibling_stopped = asyncio.Event()

    async def crash() -> None:
        await asyncio.sleep(0.01)
        raise RuntimeError("boom")

    async def sibling() -> None:
        await stop.wait()
        sibling_stopped.set()

    with pytest.raises(RuntimeError, match="boom"):
        await run_until_stopped(
            [RootTask("crash", crash), RootTask("sibling", sibling)], stop=stop, stop_timeout=1
        )
    assert sibling_stopped.is_set()


async def test_a_root_task_that_ignores_stop_is_cancelled_after_the_timeout() -> None:
    stop = asyncio.Event()
    cancelled = False

    async def stubborn() -> None:
        nonlocal cancelled
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled = True
            raise

    asyncio.get_running_loop().call_later(0.01, stop.set)
    await run_until_stopped([RootTask("stubborn", stubborn)], stop=stop, stop_timeout=0.05)
    assert cancelled


async def test_a_pool_drains_in_flight_work_and_respects_its_limit() -> None:
    pool = TaskPool("work", limit=2)
    running = 0
    peak = 0
    finished = 0

    async def job() -> None:
        nonlocal running, peak, finished
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        finished += 1

    for i in range(6):
        await pool.spawn(str(i), job())
    await pool.drain(timeout=5)
    assert finished == 6
    assert peak <= 2
    assert len(pool) == 0
