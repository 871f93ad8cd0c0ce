"""A canary secret value appears nowhere: not in logs, Events, statuses or bus messages.

A lifecycle runs through the suite's own four services (the fleet) with two secrets in play,
each holding a fresh random canary: the pre-deployment task's ``secureParameters`` (read by the
function, as ``SECURE_DATA``) and the KeptnMetricsProvider's ``secretKeyRef`` (basic-auth
credentials the evaluator sends to the stack's Prometheus). Once the lifecycle has Completed,
the test scans:

- the log of each fleet service (everything it logged this session), and every log of the stack
  (``~/.local/state/klt/logs``: the apiserver, the node agent that ran the function's process,
  the stack's services …);
- every core/v1 Event in the namespace;
- every object in the namespace but the Secrets themselves (statuses, specs, the Job and its
  pod, the function's ConfigMap …);
- every message on every topic of the fleet's prefix (this test's and the earlier ones'), read
  from the beginning by a fresh consumer.

The canary is looked for as written and base64-encoded (as a Secret's ``data`` holds it).
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from faults_kit import (
    LIFECYCLE,
    TASK_DEFINITIONS,
    Plan,
    Scope,
    ServiceProcess,
    create_evaluation,
    gated_replicaset,
    invariants,
    wait_outcomes,
)

from klt_common.clients import cluster as k8s

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

STACK_LOGS = Path.home() / ".local" / "state" / "klt" / "logs"
FUNCTION = """\
import os
secret = os.environ.get("SECURE_DATA", "")
print("pre-deployment check ran with a secret of", len(secret), "characters")
"""


def _found(needles: list[bytes], haystack: bytes) -> bool:
    return any(needle in haystack for needle in needles)


def _scan_file(path: Path, needles: list[bytes]) -> bool:
    overlap = max(len(n) for n in needles)
    tail = b""
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            if _found(needles, tail + chunk):
                return True
            tail = chunk[-overlap:]
    return False


async def _create_objects(cluster: k8s.ClusterClient, scope: Scope, canary: str) -> None:
    ns, labels = scope.namespace, scope.object_labels()
    for name, data in (
        ("task-secret", {"SECURE_DATA": canary}),
        ("prom-creds", {"user": "klt", "password": canary}),
    ):
        await cluster.create(
            k8s.SECRETS,
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data},
            ns,
        )
    await cluster.create(
        TASK_DEFINITIONS,
        {
            "apiVersion": LIFECYCLE,
            "kind": "KeptnTaskDefinition",
            "metadata": {"name": "pre-ok", "labels": labels},
            "spec": {
                "python": {
                    "inline": {"code": FUNCTION},
                    "parameters": {"map": {"service": "menu"}},
                    "secureParameters": {"secret": "task-secret"},
                },
                "retries": 0,
            },
        },
        ns,
    )
    await create_evaluation(
        cluster, scope, provider_secret={"name": "prom-creds", "key": "password"}
    )


async def _namespace_objects(cluster: k8s.ClusterClient, ns: str) -> list[dict[str, Any]]:
    """Every object in the namespace, of every listable namespaced kind but Secrets."""
    out: list[dict[str, Any]] = []
    apis = await cluster.request("GET", "/apis")
    groups = [("", "v1")] + [
        (group["name"], group["preferredVersion"]["version"]) for group in apis.get("groups") or []
    ]
    for group, version in groups:
        path = f"/api/{version}" if not group else f"/apis/{group}/{version}"
        listing = await cluster.request("GET", path)
        for res in listing.get("resources") or []:
            if (
                not res.get("namespaced")
                or "/" in res["name"]
                or "list" not in res.get("verbs", [])
            ):
                continue
            if res["name"] == "secrets":
                continue
            resource = k8s.Resource(group, version, res["name"], res["kind"])
            out.extend((await cluster.list(resource, ns)).items)
    return out


async def _bus_messages(bootstrap: str, prefix: str) -> list[bytes]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        topics = sorted(t for t in await admin.list_topics() if t.startswith(prefix))
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=f"canary-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[bytes] = []
    try:
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < 5:
            batch = await consumer.getmany(timeout_ms=500)
            for messages in batch.values():
                for m in messages:
                    idle_since = time.monotonic()
                    headers = b"".join(k.encode() + b"=" + (v or b"") for k, v in m.headers or ())
                    records.append((m.key or b"") + b"|" + (m.value or b"") + b"|" + headers)
    finally:
        await consumer.stop()
    assert topics, prefix
    assert records, topics
    return records


async def test_a_canary_secret_leaks_nowhere(
    cluster: k8s.ClusterClient,
    scope: Scope,
    fleet: dict[str, ServiceProcess],
    capsys: pytest.CaptureFixture[str],
) -> None:
    canary = f"canary-{uuid.uuid4().hex}"
    needles = [canary.encode(), base64.b64encode(canary.encode())]
    ns = scope.namespace
    started = time.monotonic()
    await _create_objects(cluster, scope, canary)
    plan = Plan("menu", evaluation=True)
    await cluster.create(k8s.REPLICASETS, gated_replicaset(plan), ns)
    await wait_outcomes(cluster, ns, [plan], timeout=240)
    await invariants(cluster, ns, [plan])
    task = (await cluster.list(k8s.keptn_resource("KeptnTask"), ns)).items[0]
    assert task["status"]["status"] == "Succeeded"
    # The function really received the secret: its output (kept in the task's logTail) says
    # how long it was.
    assert f"with a secret of {len(canary)} characters" in task["status"].get("logTail", ""), task[
        "status"
    ]

    logs = [member.log for member in fleet.values()] + sorted(STACK_LOGS.glob("*.log"))
    leaks = [f"log {path}" for path in logs if _scan_file(path, needles)]
    events = (await cluster.list(k8s.EVENTS, ns)).items
    leaks += [
        f"event {e.get('reason')}: {e.get('message')}"
        for e in events
        if _found(needles, json.dumps(e).encode())
    ]
    objects = await _namespace_objects(cluster, ns)
    leaks += [
        f"{o.get('kind')} {o['metadata']['name']}"
        for o in objects
        if _found(needles, json.dumps(o).encode())
    ]
    messages = await _bus_messages(scope.bootstrap, scope.topic_prefix)
    leaks += [f"bus message {m[:200]!r}" for m in messages if _found(needles, m)]
    assert not leaks, leaks
    with capsys.disabled():
        print(
            f"\n[faults:secrets] scanned {len(logs)} logs, {len(events)} events, "
            f"{len(objects)} objects, {len(messages)} bus messages: no canary; "
            f"duration={time.monotonic() - started:.0f}s"
        )
