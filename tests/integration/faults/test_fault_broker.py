"""Restart the Kafka broker mid-run: no lifecycle is lost.

The suite's own four services (the ``fleet``) run against its private broker (never the
stack's). While lifecycles are in flight the broker is SIGKILLed and started again on the same
data dir; the services are left alone and must ride the outage out (producers and consumers
reconnect, and the reconcilers redo what an event lost on the way would have done). Afterwards
every lifecycle has ended as planned, nothing is duplicated, and every service is still the
process it was.

Short: 6 lifecycles, one restart. ``KLT_LONG=1``: 40 lifecycles, three restarts.
"""

from __future__ import annotations

import asyncio
import random
import time

import pytest
from faults_kit import (
    LONG,
    Plan,
    PrivateKafka,
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

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200 if LONG else 420)]

LIFECYCLES, RESTARTS = (40, 3) if LONG else (6, 1)


async def test_a_broker_restart_loses_no_lifecycle(
    cluster: k8s.ClusterClient,
    scope: Scope,
    private_kafka: PrivateKafka,
    fleet: dict[str, ServiceProcess],
    capsys: pytest.CaptureFixture[str],
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    ns = scope.namespace
    await require_pod_slots(cluster, 2 * LIFECYCLES + 4)
    await create_checks(cluster, scope)
    lifecycle_plans = plans(LIFECYCLES, prefix="br")
    waves = [lifecycle_plans[i :: RESTARTS + 1] for i in range(RESTARTS + 1)]
    restarts: list[tuple[int, float]] = []
    started = time.monotonic()
    pids = {name: m.process.pid for name, m in fleet.items() if m.process}
    created: list[Plan] = []
    for wave in waves[:-1]:
        await asyncio.gather(
            *(cluster.create(k8s.REPLICASETS, gated_replicaset(p), ns) for p in wave)
        )
        created += wave
        await asyncio.sleep(rng.uniform(0.5, 3.0 if LONG else 1.5))
        unfinished = await in_flight(cluster, ns, created)
        down = time.monotonic()
        await asyncio.to_thread(private_kafka.restart)
        restarts.append((unfinished, round(time.monotonic() - down, 1)))
    await asyncio.gather(
        *(cluster.create(k8s.REPLICASETS, gated_replicaset(p), ns) for p in waves[-1])
    )
    await wait_outcomes(cluster, ns, lifecycle_plans, timeout=900 if LONG else 300)
    counts = await invariants(cluster, ns, lifecycle_plans)
    survivors = {name: m.running for name, m in fleet.items()}
    same = {name: m.process.pid == pids[name] for name, m in fleet.items() if m.process}
    assert all(survivors.values()), f"a service died with the broker: {survivors}"
    assert all(same.values()), same
    assert any(unfinished for unfinished, _ in restarts), restarts
    with capsys.disabled():
        print(
            f"\n[faults:broker] seed={seed} lifecycles={counts['lifecycles']} "
            f"restarts={len(restarts)} (unfinished at restart, seconds down: {restarts}) "
            f"tasks={counts['tasks']} jobs={counts['jobs']} "
            f"duration={time.monotonic() - started:.0f}s"
        )
