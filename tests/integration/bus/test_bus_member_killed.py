"""A two-member consumer group in which one member is SIGKILLed mid-stream.

At-least-once delivery means the killed member's uncommitted records (in flight, or handled
but not yet committed) are redelivered to the survivor. The test checks the two halves of the
contract: nothing is lost (every published event has its effect), and nothing has its effect
twice (the handler's idempotency by CloudEvent id absorbs the redeliveries, which are counted).
"""

from __future__ import annotations

import asyncio
import signal
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest
from bus_testkit import wait_for

from klt_common.clients import bus
from klt_common.configs.settings import BusSettings
from klt_common.structs import events

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(150)]

MEMBER = Path(__file__).with_name("bus_member.py")
WARM_UP_EFFECTS = 30
"""Each member must have done this much work before the kill, so both own live partitions."""
AFTER_KILL = 200
"""Events published after the kill, so the stream is still flowing while partitions move."""


def effects(workdir: Path) -> dict[str, str]:
    """Event id → the member whose handler had the effect ('' while being written)."""
    return {
        path.name: path.read_text().split(" ", 1)[0] for path in (workdir / "effects").iterdir()
    }


async def test_a_killed_member_loses_nothing_and_effects_happen_once(
    kafka_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}."
    group = f"test-{uuid.uuid4().hex[:12]}"
    settings = BusSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=prefix, partitions=6)
    await bus.ensure_topics(settings, [events.Topic.TASKS, events.Topic.DEADLETTER])
    (tmp_path / "effects").mkdir()

    members: dict[str, asyncio.subprocess.Process] = {}
    for name in ("a", "b"):
        with (tmp_path / f"{name}.log").open("wb") as log:  # the child keeps its own copy
            members[name] = await asyncio.create_subprocess_exec(
                sys.executable,
                str(MEMBER),
                kafka_bootstrap,
                prefix,
                group,
                str(tmp_path),
                name,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )
    published: list[str] = []
    killed = asyncio.Event()
    try:

        async def publish() -> None:
            async with bus.Publisher(settings, client_id="test-publisher") as publisher:
                after_kill = 0
                while after_kill < AFTER_KILL:
                    assert len(published) < 5000, "the members never got going"
                    n = len(published)
                    payload = events.TaskRequested(
                        namespace="shop", app=f"app-{n % 24}", task_name=f"task-{n}", phase="X"
                    )
                    published.append((await publisher.publish(payload, source="/test")).id)
                    after_kill += killed.is_set()
                    await asyncio.sleep(0.004)

        publishing = asyncio.create_task(publish())

        def warmed_up() -> bool:
            done = Counter(effects(tmp_path).values())
            return done["a"] >= WARM_UP_EFFECTS and done["b"] >= WARM_UP_EFFECTS

        await wait_for(warmed_up, timeout=60, what="both members to handle events")
        members["a"].send_signal(signal.SIGKILL)
        killed.set()
        at_kill = effects(tmp_path)
        await members["a"].wait()

        await publishing
        assert len(at_kill) < len(published), "the kill was not mid-stream"
        await wait_for(
            lambda: len(effects(tmp_path)) >= len(published),
            timeout=60,
            what=f"effects of all {len(published)} events",
        )
        members["b"].send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(members["b"].wait(), 30) == 0, "b did not stop cleanly"
    finally:
        for process in members.values():
            if process.returncode is None:
                process.kill()
                await process.wait()

    done = effects(tmp_path)
    # Nothing lost, nothing extra: exactly one effect per published event.
    assert sorted(done) == sorted(published)
    # The survivor took over the killed member's partitions.
    partitions: dict[str, set[int]] = {"a": set(), "b": set()}
    for path in (tmp_path / "effects").iterdir():
        member, partition, _ = path.read_text().split()
        partitions[member].add(int(partition))
    assert partitions["a"] <= partitions["b"], partitions
    assert partitions["a"] | partitions["b"] == set(range(6))

    attempts = Counter(path.name.split(".")[0] for path in (tmp_path / "attempts").iterdir())
    redelivered_after_effect = len(list((tmp_path / "redeliveries").iterdir()))
    redelivered = sum(attempts.values()) - len(published)
    assert set(attempts) == set(published)
    assert redelivered >= redelivered_after_effect
    with capsys.disabled():
        print(
            f"\n[kill test] published={len(published)} effects={len(done)} "
            f"a_before_kill={Counter(at_kill.values())['a']} "
            f"deliveries={sum(attempts.values())} redelivered={redelivered} "
            f"(of which after the effect, absorbed by idempotency: {redelivered_after_effect})"
        )
