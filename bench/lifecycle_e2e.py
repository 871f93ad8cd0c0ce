"""Lifecycle end to end: annotated Deployments through all five services to Completed.

Not a test: a measurement on the local stack with the stack's own services, one instance each
(webhook, app-aggregator, task-runner, evaluator, scheduler as separate processes), the real
kube-controller-manager making the pods, and the node agent running the pre-deployment task's
Job. Nothing is played by the bench; it only creates objects and watches.

The bench creates a fresh namespace opted in with ``keptn.sh/lifecycle-toolkit: enabled``, a
KeptnTaskDefinition (a python function printing one line) and ``--workloads`` Deployments, each
its own single-service app with that definition as its pre-deployment task. Two modes:

- burst (default): all Deployments created at once (every pod admitted within a second or so),
  then it waits until every KeptnAppVersion has Completed. Measures throughput, and the
  overhead under that load (queueing included);
- ``--sequential``: one Deployment at a time, the next once the previous app Completed.
  Measures klt's own overhead per lifecycle, the figure the goal (p50 300 ms, p99 1 s) is for.

Per workload, from the bench's own watches (receive times on one monotonic clock):

- ``t_pod``: the pod's ADDED event, i.e. pod creation (by the ReplicaSet controller);
- ``t_gate``: the first event showing the pod without the ``keptn-prechecks-gate``;
- ``t_job_added`` .. ``t_job_done``: the pre-deployment task's Job from its creation to its
  Complete condition; this is the task's own run time (the node agent starting a Python process
  and running it), which is subtracted.

Reported overhead: ``t_gate - t_pod - (t_job_done - t_job_added)``: admission, the bus to the
aggregator, four resources created, the scheduler's passes, the KeptnTask, the task-runner
making the Job and noticing it finished, the bus back and the gate patch. Also reported: the
time from the burst's start to the last KeptnAppVersion Completed, as workloads per second.

    ./klt dev up && .venv/bin/python bench/lifecycle_e2e.py [--sequential 20] [--burst 200]

Writes bench/results/lifecycle_e2e.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from klt_common.clients import cluster as k8s
from klt_common.configs.settings import ClusterSettings
from klt_common.structs import discovery

RESULTS = Path(__file__).resolve().parent / "results"
KAV = k8s.keptn_resource("KeptnAppVersion")
TASK_DEFINITIONS = k8s.keptn_resource("KeptnTaskDefinition")
KEPTN_POLLING_FLOOR_S = (5.0, 10.0)
TASK = "pre-check"


@dataclass
class Workload:
    t_pod: float | None = None
    t_gate: float | None = None
    t_job_added: float | None = None
    t_job_done: float | None = None
    t_completed: float | None = None
    status: str = ""

    @property
    def overhead_ms(self) -> float | None:
        task = self.task_ms
        if self.t_pod is None or self.t_gate is None or task is None:
            return None
        return (self.t_gate - self.t_pod) * 1000 - task

    @property
    def task_ms(self) -> float | None:
        if self.t_job_added is None or self.t_job_done is None:
            return None
        return (self.t_job_done - self.t_job_added) * 1000


@dataclass
class Run:
    workloads: dict[str, Workload] = field(default_factory=dict)

    def of(self, name: str) -> Workload:
        return self.workloads.setdefault(name, Workload())


def _gated(pod: dict[str, Any]) -> bool:
    gates = (pod.get("spec") or {}).get("schedulingGates") or []
    return any(g.get("name") == discovery.SCHEDULING_GATE for g in gates)


def _deployment(ns: str, name: str) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {
                        "keptn.sh/workload": name,
                        "keptn.sh/version": "1.0.0",
                        "keptn.sh/pre-deployment-tasks": TASK,
                    },
                },
                "spec": {
                    "containers": [
                        {"name": "main", "image": "busybox:1.36", "command": ["sleep", "3600"]}
                    ]
                },
            },
        },
    }


async def _watch(
    cluster: k8s.ClusterClient, res: k8s.Resource, ns: str, run: Run, stop: asyncio.Event
) -> None:
    cache = k8s.WatchCache(cluster, res, namespace=ns)
    changes = cache.subscribe()
    runner = asyncio.create_task(cache.run(stop), name=f"watch:{res.plural}")
    try:
        while not stop.is_set():
            try:
                event = await asyncio.wait_for(changes.get(), 0.5)
            except TimeoutError:
                continue
            now = time.monotonic()
            _record(res, event, now, run)
    finally:
        stop.set()
        await runner


def _record(res: k8s.Resource, event: k8s.WatchEvent, now: float, run: Run) -> None:
    obj = event.object
    meta = obj.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    if res is k8s.PODS:
        workload = annotations.get("keptn.sh/workload")
        if not workload or event.type == "DELETED":
            return
        w = run.of(workload)
        if w.t_pod is None:
            w.t_pod = now
        if w.t_gate is None and not _gated(obj) and annotations.get(discovery.GATE_REMOVED):
            w.t_gate = now
    elif res is k8s.JOBS:
        workload = annotations.get("keptn.sh/workload", "")
        # The Job names the KeptnWorkload (``<app>-<workload>``); each app here is one workload
        # of the same name.
        name = workload.partition("-")[2] or workload
        w = run.of(name)
        if w.t_job_added is None:
            w.t_job_added = now
        conditions = (obj.get("status") or {}).get("conditions") or []
        if w.t_job_done is None and any(
            c.get("type") == "Complete" and c.get("status") == "True" for c in conditions
        ):
            w.t_job_done = now
    elif res is KAV:
        status = obj.get("status") or {}
        app = (obj.get("spec") or {}).get("appName", "")
        w = run.of(str(app))
        if w.t_completed is None and status.get("currentPhase") == "Completed":
            w.t_completed = now
            w.status = str(status.get("status", ""))


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _measure(workloads: int, timeout: float, *, sequential: bool) -> dict[str, Any]:
    state = os.environ.get("KLT_STATE_DIR", str(Path.home() / ".local/state/klt"))
    kubeconfig = os.environ.get("KUBECONFIG", str(Path(state) / "kubeconfig"))
    cluster = await k8s.ClusterClient.connect(ClusterSettings(kubeconfig=kubeconfig))
    ns = f"bench-e2e-{uuid.uuid4().hex[:6]}"
    run = Run()
    stop = asyncio.Event()
    try:
        await cluster.create(
            k8s.NAMESPACES,
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": ns, "annotations": {discovery.NAMESPACE_ENABLED: "enabled"}},
            },
        )
        await cluster.create(
            TASK_DEFINITIONS,
            {
                "apiVersion": "lifecycle.keptn.sh/v1",
                "kind": "KeptnTaskDefinition",
                "metadata": {"name": TASK, "namespace": ns},
                "spec": {"python": {"inline": {"code": "print('pre-deployment check ok')\n"}}},
            },
            ns,
        )
        watchers = [
            asyncio.create_task(_watch(cluster, res, ns, run, stop), name=f"bench:{res.plural}")
            for res in (k8s.PODS, k8s.JOBS, KAV)
        ]
        await asyncio.sleep(1.0)  # the watches have listed the empty namespace
        names = [f"w{i:03d}" for i in range(workloads)]
        started = time.monotonic()
        deadline = started + timeout
        if sequential:
            # One lifecycle at a time: the overhead of klt itself, without queueing behind others.
            for n in names:
                await cluster.create(k8s.DEPLOYMENTS, _deployment(ns, n), ns)
                while run.of(n).t_completed is None and time.monotonic() < deadline:  # noqa: ASYNC110 - the watch tasks fill ``run``; polling it keeps them simple
                    await asyncio.sleep(0.05)
                print(f"{time.monotonic() - started:7.1f}s  {n} {run.of(n).status or 'timed out'}")
            created = time.monotonic()
        else:
            creates = [cluster.create(k8s.DEPLOYMENTS, _deployment(ns, n), ns) for n in names]
            for i in range(0, len(creates), 50):
                await asyncio.gather(*creates[i : i + 50])
            created = time.monotonic()
            shown = -1
            while time.monotonic() < deadline:
                done = sum(1 for n in names if run.of(n).t_completed is not None)
                if done != shown:
                    print(f"{time.monotonic() - started:7.1f}s  {done}/{workloads} completed")
                    shown = done
                if done == workloads:
                    break
                await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*watchers, return_exceptions=True)
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await cluster.delete(k8s.NAMESPACES, ns)
        await cluster.close()

    rows = [run.of(n) for n in names]
    completed = [w for w in rows if w.t_completed is not None]
    overhead = [v for w in rows if (v := w.overhead_ms) is not None]
    tasks = [v for w in rows if (v := w.task_ms) is not None]
    last = max((w.t_completed for w in completed if w.t_completed), default=None)
    wall = (last - started) if last else None
    p50 = _pct(overhead, 0.5) if overhead else None
    return {
        "mode": "sequential" if sequential else "burst",
        "workloads": workloads,
        "completed": len(completed),
        "succeeded": sum(1 for w in completed if w.status == "Succeeded"),
        "create_seconds": round(created - started, 2),
        "seconds_to_all_completed": round(wall, 2) if wall else None,
        "workloads_per_second": round(len(completed) / wall, 2) if wall else None,
        "overhead_measured": len(overhead),
        "overhead_p50_ms": round(p50, 1) if p50 is not None else None,
        "overhead_p90_ms": round(_pct(overhead, 0.9), 1) if overhead else None,
        "overhead_p99_ms": round(_pct(overhead, 0.99), 1) if overhead else None,
        "overhead_max_ms": round(max(overhead), 1) if overhead else None,
        "task_run_time_p50_ms": round(_pct(tasks, 0.5), 1) if tasks else None,
        "keptn_floor_ratio": (
            {f"{f:g}s": round(p50 / (f * 1000), 4) for f in KEPTN_POLLING_FLOOR_S}
            if p50 is not None
            else None
        ),
        "overhead_samples_ms": [round(v, 1) for v in overhead],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--sequential", type=int, default=20, help="lifecycles run one at a time (0: none)"
    )
    parser.add_argument(
        "--burst", type=int, default=200, help="workloads created at once (0: none)"
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per mode")
    parser.add_argument("--out", default=str(RESULTS / "lifecycle_e2e.json"))
    args = parser.parse_args()
    load_before = os.getloadavg()
    measured: dict[str, Any] = {}
    if args.sequential:
        measured["sequential"] = asyncio.run(
            _measure(args.sequential, args.timeout, sequential=True)
        )
    if args.burst:
        measured["burst"] = asyncio.run(_measure(args.burst, args.timeout, sequential=False))
    load_after = os.getloadavg()
    result = {
        "benchmark": (
            "lifecycle end to end: annotated Deployments through all five services (one instance "
            "each) to KeptnAppVersion Completed, one at a time and all at once; overhead = pod "
            "created to scheduling gate removed, minus the pre-deployment task Job's own run time"
        ),
        "start_of_clock": "pod creation (ADDED on the bench's pod watch)",
        "command": (
            f"python bench/lifecycle_e2e.py --sequential {args.sequential} --burst {args.burst}"
        ),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
        "python": platform.python_version(),
        "load_average_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "stack": "Kafka 4.1.1, Kubernetes v1.34.1 (local stack), stack services one each",
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "goal": {"p50_ms": 300, "p99_ms": 1000},
        "keptn_polling_floor_s": list(KEPTN_POLLING_FLOOR_S),
        **measured,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("| mode | workloads | completed | succeeded | to all Completed s | workloads/s |", end="")
    print(" overhead p50 ms | p90 ms | p99 ms | max ms | task p50 ms |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for m in measured.values():
        print(
            f"| {m['mode']} | {m['workloads']} | {m['completed']} | {m['succeeded']} | "
            f"{m['seconds_to_all_completed']} | {m['workloads_per_second']} | "
            f"{m['overhead_p50_ms']} | {m['overhead_p90_ms']} | {m['overhead_p99_ms']} | "
            f"{m['overhead_max_ms']} | {m['task_run_time_p50_ms']} |"
        )


if __name__ == "__main__":
    main()
