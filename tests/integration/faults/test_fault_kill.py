"""SIGKILL a service at random points of many concurrent lifecycles, then restart it.

The suite's own app-aggregator, scheduler, task-runner and evaluator run as processes (the
``fleet``), on a private broker and a shard of their own; the test creates single-service apps
in the fleet's shard, whose pods are gated
(as the webhook admits them). Every fifth app's pre-deployment task fails; every third has a
post-deployment evaluation. While they run, one service at a time is SIGKILLed (no drain, no
offset commit, no group leave) and started again.

What no kill may break (``faults_kit.invariants``): every lifecycle ends as planned, no
KeptnTask has two Jobs, no check, workload version or app version exists twice, and exactly the
pods of the succeeded workloads are ungated.

Short: 8 lifecycles in 4 waves, one kill per service. ``KLT_LONG=1``: 100 concurrent
lifecycles, 12 kills.
"""

from __future__ import annotations

import asyncio
import random
import time

import pytest
from faults_kit import (
    LONG,
    Plan,
    Scope,
    ServiceProcess,
    create_checks,
    gated_replicaset,
    in_flight,
    invariants,
    plans,
    require_pod_slots,
    wait_outcomes,
)

from klt_common.clients import cluster as k8s

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500 if LONG else 420)]

SERVICES = ["app-aggregator", "scheduler", "task-runner", "evaluator"]
LIFECYCLES, WAVES, KILLS = (100, 1, 12) if LONG else (8, 4, 4)


async def test_killed_services_lose_no_lifecycle_and_duplicate_nothing(
    cluster: k8s.ClusterClient,
    scope: Scope,
    fleet: dict[str, ServiceProcess],
    capsys: pytest.CaptureFixture[str],
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    ns = scope.namespace
    await require_pod_slots(cluster, 2 * LIFECYCLES + 4)
    await create_checks(cluster, scope)
    lifecycle_plans = plans(LIFECYCLES)
    waves = [lifecycle_plans[i::WAVES] for i in range(WAVES)]
    # Every service is killed at least once before any is killed twice.
    victims = [*rng.sample(SERVICES, len(SERVICES)), *(rng.choice(SERVICES) for _ in SERVICES)]
    victims = (victims * (KILLS // len(victims) + 1))[:KILLS]
    kills: list[tuple[str, int]] = []
    started = time.monotonic()
    sem = asyncio.Semaphore(10)

    async def create(rs: dict[str, object]) -> None:
        async with sem:
            await cluster.create(k8s.REPLICASETS, rs, ns)

    created: list[Plan] = []
    for index, victim in enumerate(victims):
        if index < len(waves):
            await asyncio.gather(*(create(gated_replicaset(p)) for p in waves[index]))
            created += waves[index]
        await asyncio.sleep(rng.uniform(0.3, 2.5) if LONG else rng.uniform(0.3, 1.5))
        unfinished = await in_flight(cluster, ns, created)
        await fleet[victim].kill()
        kills.append((victim, unfinished))
        await asyncio.sleep(rng.uniform(0.0, 2.0 if LONG else 1.0))
        await fleet[victim].start()
    for wave in waves[len(victims) :]:
        await asyncio.gather(*(create(gated_replicaset(p)) for p in wave))
    await wait_outcomes(cluster, ns, lifecycle_plans, timeout=1200 if LONG else 300)
    counts = await invariants(cluster, ns, lifecycle_plans)
    assert all(member.running for member in fleet.values())
    elapsed = time.monotonic() - started
    mid_run = [k for k in kills if k[1] > 0]
    assert mid_run, f"no kill hit a lifecycle in flight: {kills}"
    with capsys.disabled():
        print(
            f"\n[faults:kill] seed={seed} lifecycles={counts['lifecycles']} "
            f"kills={len(kills)} (mid-run {len(mid_run)}: {kills}) tasks={counts['tasks']} "
            f"jobs={counts['jobs']} evaluations={counts['evaluations']} "
            f"duration={elapsed:.0f}s"
        )
