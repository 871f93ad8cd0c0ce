"""Apiserver conflicts and 5xx responses, injected by a proxy: retried, and nothing corrupted.

The suite's four services (the ``fleet``) reach the apiserver only through
``apiproxy_kit.FaultProxy`` (their kubeconfig names the proxy). For this test its faults are on:
it answers a seeded share of their requests with 409, 503, or a 500 after the write was really
applied (the response "lost"), and some reads with 500. Watches pass through. Lifecycles run to
their planned end, and nothing is corrupted: no duplicate checks, workload or app versions,
exactly one Job per KeptnTask, consistent statuses (``faults_kit.invariants``, checked with the
faults off again).

Short: 6 lifecycles. ``KLT_LONG=1``: 40 lifecycles.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import pytest
from apiproxy_kit import FaultProxy
from faults_kit import (
    LONG,
    Scope,
    ServiceProcess,
    create_checks,
    gated_replicaset,
    invariants,
    plans,
    require_pod_slots,
    wait_outcomes,
)

from klt_common.clients import cluster as k8s

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200 if LONG else 420)]

LIFECYCLES = 40 if LONG else 6


async def test_injected_conflicts_and_server_errors_are_retried_without_corruption(
    cluster: k8s.ClusterClient,
    scope: Scope,
    fleet: dict[str, ServiceProcess],
    fault_proxy: tuple[FaultProxy, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    proxy = fault_proxy[0]
    ns = scope.namespace
    started = time.monotonic()
    await require_pod_slots(cluster, 2 * LIFECYCLES + 4)
    await create_checks(cluster, scope)
    lifecycle_plans = plans(LIFECYCLES, prefix="px")
    before = Counter(proxy.injected)
    forwarded_before = Counter(proxy.forwarded)
    proxy.enabled = True
    try:
        await asyncio.gather(
            *(cluster.create(k8s.REPLICASETS, gated_replicaset(p), ns) for p in lifecycle_plans)
        )
        await wait_outcomes(cluster, ns, lifecycle_plans, timeout=900 if LONG else 300)
    finally:
        # The verdict must not depend on the proxy's luck, nor may the faults outlive the test.
        proxy.enabled = False
    injected = Counter(proxy.injected) - before
    forwarded = Counter(proxy.forwarded) - forwarded_before
    counts = await invariants(cluster, ns, lifecycle_plans)
    assert all(member.running for member in fleet.values())
    # The faults really happened, of every kind, and the lifecycles still ended as planned.
    assert set(injected) == {"conflict", "unavailable", "lost-response", "read-error"}, injected
    with capsys.disabled():
        print(
            f"\n[faults:apiserver] seed={proxy.seed} lifecycles={counts['lifecycles']} "
            f"injected={dict(injected)} forwarded={dict(forwarded)} "
            f"tasks={counts['tasks']} jobs={counts['jobs']} evaluations={counts['evaluations']} "
            f"duration={time.monotonic() - started:.0f}s"
        )
