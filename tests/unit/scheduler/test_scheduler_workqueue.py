"""Per-object serialisation: one pass per object at a time, triggers during a pass coalesced
into exactly one more pass, hints carried to the pass that consumes them, errors surfaced to
waiting callers and retried for background kicks, timers keeping the earliest deadline."""

from __future__ import annotations

import asyncio

import pytest

from klt_scheduler.workqueue import NO_HINTS, Hints, Key, Runner

A: Key = ("KeptnAppVersion", "ns", "a")
B: Key = ("KeptnAppVersion", "ns", "b")


class Recorder:
    def __init__(self, *, hold: float = 0.0, fail: int = 0) -> None:
        self.calls: list[tuple[Key, Hints]] = []
        self.running: dict[Key, int] = {}
        self.overlaps = 0
        self.hold = hold
        self.fail = fail

    async def __call__(self, key: Key, hints: Hints) -> None:
        self.running[key] = self.running.get(key, 0) + 1
        if self.running[key] > 1:
            self.overlaps += 1
        try:
            self.calls.append((key, hints))
            await asyncio.sleep(self.hold)
            if self.fail:
                self.fail -= 1
                raise RuntimeError("apiserver unavailable")
        finally:
            self.running[key] -= 1


def _runner(work: Recorder, **kwargs: object) -> Runner:
    options: dict[str, object] = {"retry_delays": (0.01, 0.01), "limit": 8}
    options.update(kwargs)
    return Runner(work, **options)  # type: ignore[arg-type]


async def test_triggers_during_a_pass_cost_exactly_one_more_pass() -> None:
    work = Recorder(hold=0.05)
    runner = _runner(work)
    first = asyncio.create_task(runner.run(A))
    await asyncio.sleep(0.01)  # the first pass is running now
    others = [asyncio.create_task(runner.run(A)) for _ in range(10)]
    await asyncio.gather(first, *others)
    assert len(work.calls) == 2
    assert work.overlaps == 0


async def test_different_objects_run_in_parallel() -> None:
    work = Recorder(hold=0.05)
    runner = _runner(work)
    started = asyncio.get_running_loop().time()
    await asyncio.gather(runner.run(A), runner.run(B))
    assert asyncio.get_running_loop().time() - started < 0.09
    assert {key for key, _ in work.calls} == {A, B}


async def test_hints_accumulate_until_a_pass_takes_them() -> None:
    work = Recorder(hold=0.05)
    runner = _runner(work)
    first = asyncio.create_task(runner.run(A, Hints(fresh=frozenset({"t1"}))))
    await asyncio.sleep(0.01)
    await asyncio.gather(
        first,
        runner.run(A, Hints(fresh=frozenset({"t2"}))),
        runner.run(A, Hints(fresh=frozenset({"t3"}), generation=4)),
    )
    assert [h for _, h in work.calls] == [
        Hints(fresh=frozenset({"t1"})),
        Hints(fresh=frozenset({"t2", "t3"}), generation=4),
    ]


async def test_a_failed_pass_raises_to_its_caller_and_hands_its_hints_to_the_next() -> None:
    work = Recorder(hold=0.05, fail=1)
    runner = _runner(work)
    first = asyncio.create_task(runner.run(A, Hints(fresh=frozenset({"t1"}))))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(runner.run(A, Hints(fresh=frozenset({"t2"}))))
    with pytest.raises(RuntimeError):
        await first
    await second
    assert work.calls[-1] == (A, Hints(fresh=frozenset({"t1", "t2"})))


async def test_a_background_kick_is_retried_after_a_failure() -> None:
    work = Recorder(fail=2)
    runner = _runner(work)
    runner.kick(A)
    for _ in range(100):
        if len(work.calls) == 3:
            break
        await asyncio.sleep(0.01)
    assert len(work.calls) == 3
    await runner.close(1)


async def test_a_timer_fires_once_at_the_earliest_deadline() -> None:
    work = Recorder()
    runner = _runner(work)
    loop = asyncio.get_running_loop()
    runner.at(A, loop.time() + 0.2)
    runner.at(A, loop.time() + 0.05)  # earlier wins
    runner.at(A, loop.time() + 0.3)  # later is ignored
    await asyncio.sleep(0.12)
    assert work.calls == [(A, NO_HINTS)]
    await asyncio.sleep(0.25)
    assert len(work.calls) == 1
    await runner.close(1)


async def test_a_forgotten_timer_never_fires_and_close_stops_new_work() -> None:
    work = Recorder()
    runner = _runner(work)
    loop = asyncio.get_running_loop()
    runner.at(A, loop.time() + 0.05)
    runner.forget(A)
    await runner.close(1)
    runner.kick(B)
    await asyncio.sleep(0.1)
    assert work.calls == []
