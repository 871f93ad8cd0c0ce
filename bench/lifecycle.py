"""Lifecycle overhead: from a new workload version to its pods' scheduling gate being removed.

Not a test: a measurement on the local stack (real apiserver, real Kafka, the node agent). The
scheduler runs as its own process (``python -m klt_scheduler``), confined to a fresh namespace,
shard and topic prefix. The bench plays the services that are not part of the measurement:

- the **app-aggregator**: it creates the KeptnAppVersion (no app-level checks) and the
  KeptnWorkloadVersion (one pre-deployment task) of a ReplicaSet whose pod is already gated,
  and publishes ``AppVersionCreated`` and ``WorkloadVersionCreated``. The clock starts once the
  workload version exists (``t0``), i.e. *from workload-version creation*: the webhook and the
  aggregator are measured by their own benchmarks, so "from pod creation" would add theirs;
- the **task-runner**: on ``TaskRequested`` it writes the KeptnTask's status ``Succeeded`` and
  publishes ``TaskFinished`` at once. The time between receiving the request and publishing the
  result is the task's own run time, and is subtracted.

The clock starts when the create call of the KeptnWorkloadVersion returns and stops when the
bench's own pod watch sees the gate gone (``t1``). Reported overhead:
``t1 - t0 - task_run_time``: three scheduler passes (app version, workload version start with
the KeptnTask's creation, workload version after TaskFinished), two bus hops to and from the
task-runner, one watch hop from app to workload version, and the pod patch.

    ./klt dev up && .venv/bin/python bench/lifecycle.py [--runs 100] [--concurrent 20]

Writes bench/results/lifecycle.json and prints a Markdown table for docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from klt_common.clients import bus
from klt_common.clients import cluster as k8s
from klt_common.configs.settings import BusSettings, ClusterSettings
from klt_common.structs import discovery, events

RESULTS = Path(__file__).resolve().parent / "results"
SHARD_LABEL = "klt.sh/scheduler-shard"
LIFECYCLE = "lifecycle.keptn.sh/v1"
KAV = k8s.keptn_resource("KeptnAppVersion")
KWV = k8s.keptn_resource("KeptnWorkloadVersion")
TASKS = k8s.keptn_resource("KeptnTask")
TASK_DEFINITIONS = k8s.keptn_resource("KeptnTaskDefinition")
KEPTN_POLLING_FLOOR_S = (5.0, 10.0)


@dataclass
class Run:
    app: str
    rs_uid: str
    started: bool = False
    t0: float = 0.0
    t1: float = 0.0
    task_received: float = 0.0
    task_published: float = 0.0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def overhead_ms(self) -> float:
        task = max(0.0, self.task_published - self.task_received)
        return (self.t1 - self.t0 - task) * 1000

    @property
    def task_ms(self) -> float:
        return (self.task_published - self.task_received) * 1000


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _kubeconfig() -> str:
    state = os.environ.get("KLT_STATE_DIR", str(Path.home() / ".local/state/klt"))
    return os.environ.get("KUBECONFIG", str(Path(state) / "kubeconfig"))


@contextlib.asynccontextmanager
async def _scheduler(env: dict[str, str], log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "klt_scheduler",
            env={**os.environ, **env},
            stderr=sink,
            stdout=asyncio.subprocess.DEVNULL,
        )
    port = int(env["KLT_OBSERVABILITY__HTTP_PORT"])
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as http:
        while True:
            if time.monotonic() > deadline or process.returncode is not None:
                raise RuntimeError(f"the scheduler did not become ready; see {log}")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                    if response.status == 200:
                        break
            await asyncio.sleep(0.1)
    try:
        yield process
    finally:
        process.terminate()
        await process.wait()


def _replicaset(name: str) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "schedulingGates": [{"name": discovery.SCHEDULING_GATE}],
                    "terminationGracePeriodSeconds": 0,
                    "containers": [{"name": "web", "image": "nginx:1.27"}],
                },
            },
        },
    }


class Bench:
    def __init__(self, cluster: k8s.ClusterClient, bus_settings: BusSettings, ns: str) -> None:
        self.cluster = cluster
        self.bus_settings = bus_settings
        self.ns = ns
        self.runs: dict[str, Run] = {}
        self.by_uid: dict[str, Run] = {}

    async def prepare(self, count: int, prefix: str) -> list[Run]:
        runs = []
        for i in range(count):
            app = f"{prefix}{i}"
            rs = await self.cluster.create(k8s.REPLICASETS, _replicaset(app), self.ns)
            run = Run(app, rs["metadata"]["uid"])
            self.runs[app] = run
            self.by_uid[run.rs_uid] = run
            runs.append(run)
        return runs

    def on_pod(self, event: k8s.WatchEvent) -> None:
        pod = event.object
        gates = pod.get("spec", {}).get("schedulingGates") or []
        if any(g.get("name") == discovery.SCHEDULING_GATE for g in gates):
            return
        for owner in pod["metadata"].get("ownerReferences") or []:
            run = self.by_uid.get(owner.get("uid", ""))
            if run is not None and run.started and not run.t1:
                run.t1 = time.perf_counter()
                run.done.set()

    async def on_task(
        self, envelope: events.Envelope[events.TaskRequested], _where: bus.Coordinates
    ) -> None:
        received = time.perf_counter()
        data = envelope.data
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

        def succeed(obj: dict[str, Any]) -> dict[str, Any]:
            obj["status"] = {"status": "Succeeded", "startTime": now, "endTime": now}
            return obj

        await self.cluster.update(TASKS, data.task_name, self.ns, succeed, subresource="status")
        await self.publisher.publish(
            events.TaskFinished(
                namespace=self.ns,
                app=data.app,
                task_name=data.task_name,
                workload=data.workload,
                state=events.State.SUCCEEDED,
            ),
            source="/bench/task-runner",
        )
        run = self.runs.get(data.app)
        if run is not None:
            run.task_received, run.task_published = received, time.perf_counter()

    async def start(self, run: Run) -> None:
        app, version = run.app, "1"
        kav = discovery.app_version_name(app, version, 1)
        kwv = discovery.create_resource_name(app, "web", version)
        run.started = True
        await self.cluster.create(
            KAV,
            {
                "apiVersion": LIFECYCLE,
                "kind": "KeptnAppVersion",
                "metadata": {"name": kav},
                "spec": {
                    "appName": app,
                    "version": version,
                    "workloads": [{"name": "web", "version": version}],
                },
            },
            self.ns,
        )
        await self.cluster.create(
            KWV,
            {
                "apiVersion": LIFECYCLE,
                "kind": "KeptnWorkloadVersion",
                "metadata": {"name": kwv},
                "spec": {
                    "app": app,
                    "version": version,
                    "workloadName": f"{app}-web",
                    "resourceReference": {"uid": run.rs_uid, "kind": "ReplicaSet", "name": app},
                    "preDeploymentTasks": ["check"],
                },
            },
            self.ns,
        )
        # The clock starts when the workload version exists (its app version was created just
        # before, as the aggregator does); creating them is the aggregator's work, not ours.
        run.t0 = time.perf_counter()
        await self.publisher.publish(
            events.AppVersionCreated(
                namespace=self.ns,
                app=app,
                app_version_name=kav,
                version=version,
                generation=1,
            ),
            source="/bench/aggregator",
        )
        await self.publisher.publish(
            events.WorkloadVersionCreated(
                namespace=self.ns,
                app=app,
                workload=f"{app}-web",
                workload_version_name=kwv,
                version=version,
            ),
            source="/bench/aggregator",
        )
        try:
            await asyncio.wait_for(run.done.wait(), 60)
        except TimeoutError:
            app_status = (await self.cluster.get(KAV, kav, self.ns)).get("status", {})
            workload_status = (await self.cluster.get(KWV, kwv, self.ns)).get("status", {})
            raise RuntimeError(
                f"{app}: no gate release within 60 s; app version {app_status}, "
                f"workload version {workload_status}, task {run.task_received=}"
            ) from None

    publisher: bus.Publisher


async def _measure(runs: int, concurrent: int) -> dict[str, Any]:
    bootstrap = os.environ.get("KLT_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    kubeconfig = _kubeconfig()
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    shard = f"bench-{uuid.uuid4().hex[:8]}"
    ns = f"bench-{uuid.uuid4().hex[:8]}"
    bus_settings = BusSettings(bootstrap_servers=bootstrap, topic_prefix=prefix)
    await bus.ensure_topics(bus_settings, list(events.Topic))
    cluster = await k8s.ClusterClient.connect(ClusterSettings(kubeconfig=kubeconfig))
    await cluster.create(
        k8s.NAMESPACES,
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": ns, "labels": {SHARD_LABEL: shard}},
        },
    )
    result: dict[str, Any] = {}
    try:
        await cluster.create(
            TASK_DEFINITIONS,
            {
                "apiVersion": LIFECYCLE,
                "kind": "KeptnTaskDefinition",
                # The label keeps the stack's own task-runner away: the bench plays that part.
                "metadata": {"name": "check", "labels": {"klt.dev/runner-class": "bench"}},
                "spec": {"container": {"name": "check", "image": "klt.test/never-runs:1"}},
            },
            ns,
        )
        bench = Bench(cluster, bus_settings, ns)
        warmup = await bench.prepare(3, "warm")
        sequential = await bench.prepare(runs, "seq")
        burst = await bench.prepare(concurrent, "burst")
        pods = k8s.WatchCache(cluster, k8s.PODS, namespace=ns)
        queue = pods.subscribe()
        stop = asyncio.Event()
        watcher = asyncio.create_task(pods.run(stop))
        await pods.wait_synced(30)

        async def feed() -> None:
            while True:
                bench.on_pod(await queue.get())

        feeder = asyncio.create_task(feed())
        env = {
            "KLT_CLUSTER__KUBECONFIG": kubeconfig,
            "KLT_BUS__BOOTSTRAP_SERVERS": bootstrap,
            "KLT_BUS__TOPIC_PREFIX": prefix,
            "KLT_SCHEDULER__NAMESPACE": ns,
            "KLT_SCHEDULER__SHARD": shard,
            "KLT_SCHEDULER__CONSUMER_GROUP": f"klt-scheduler-{shard}",
            "KLT_OBSERVABILITY__HTTP_HOST": "127.0.0.1",
            "KLT_OBSERVABILITY__HTTP_PORT": str(_free_port()),
            "KLT_OBSERVABILITY__LOG_JSON": "false",
            "KLT_OBSERVABILITY__LOG_LEVEL": "INFO",
        }
        consumer = bus.Consumer(bus_settings, group_id=f"bench-runner-{shard}", client_id="bench")
        consumer.register(events.TaskRequested, bench.on_task)
        consumer_task = asyncio.create_task(consumer.run(stop))
        async with bus.Publisher(bus_settings, client_id="bench") as publisher:
            bench.publisher = publisher
            log = Path(tempfile.gettempdir()) / f"klt-bench-scheduler-{shard}.log"
            print(f"scheduler log: {log}", file=sys.stderr)
            async with _scheduler(env, log):
                await asyncio.sleep(3)  # let both consumer groups settle
                for run in warmup:
                    await bench.start(run)
                started = time.perf_counter()
                for run in sequential:
                    await bench.start(run)
                sequential_s = time.perf_counter() - started
                started = time.perf_counter()
                if burst:
                    await asyncio.gather(*(bench.start(run) for run in burst))
                burst_s = time.perf_counter() - started
                await asyncio.sleep(2)  # let the workloads finish their lifecycles
                scraped = await _scrape(int(env["KLT_OBSERVABILITY__HTTP_PORT"]))
        stop.set()
        feeder.cancel()
        await asyncio.gather(watcher, consumer_task, feeder, return_exceptions=True)
        lifecycles = len(warmup) + len(sequential) + len(burst)
        result = {
            "sequential": _summary(sequential, sequential_s),
            "burst": _summary(burst, burst_s) if burst else None,
            "scheduler": {
                "passes_per_lifecycle": {
                    kind_result: round(value / lifecycles, 2)
                    for kind_result, value in sorted(scraped["passes"].items())
                },
                "mean_pass_ms": scraped["mean_pass_ms"],
                "conflicts": scraped["conflicts"],
            },
        }
    finally:
        await cluster.delete(k8s.NAMESPACES, ns)
        await cluster.close()
    return result


async def _scrape(port: int) -> dict[str, Any]:
    """The scheduler's own pass counters, from its /metrics."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        text = await response.text()
    passes: dict[str, float] = {}
    seconds = count = conflicts = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        if name.startswith("klt_scheduler_passes_total{"):
            labels = dict(part.split("=", 1) for part in name[name.index("{") + 1 : -1].split(","))
            key = f"{labels['kind'].strip(chr(34))}/{labels['result'].strip(chr(34))}"
            passes[key] = passes.get(key, 0.0) + float(value)
        elif name.startswith("klt_scheduler_pass_seconds_sum"):
            seconds += float(value)
        elif name.startswith("klt_scheduler_pass_seconds_count"):
            count += float(value)
        elif name.startswith("klt_scheduler_conflicts_total"):
            conflicts += float(value)
    return {
        "passes": passes,
        "mean_pass_ms": round(seconds / count * 1000, 1) if count else None,
        "conflicts": conflicts,
    }


def _summary(runs: list[Run], seconds: float) -> dict[str, Any]:
    overhead = [r.overhead_ms for r in runs]
    total = [(r.t1 - r.t0) * 1000 for r in runs]
    task = [r.task_ms for r in runs]
    p50 = _pct(overhead, 0.5)
    return {
        "runs": len(runs),
        "wall_seconds": round(seconds, 2),
        "overhead_p50_ms": round(p50, 1),
        "overhead_p90_ms": round(_pct(overhead, 0.9), 1),
        "overhead_p99_ms": round(_pct(overhead, 0.99), 1),
        "overhead_max_ms": round(max(overhead), 1),
        "end_to_end_p50_ms": round(_pct(total, 0.5), 1),
        "task_run_time_p50_ms": round(_pct(task, 0.5), 1),
        "keptn_floor_ratio": {
            f"{floor:g}s": round(p50 / (floor * 1000), 4) for floor in KEPTN_POLLING_FLOOR_S
        },
        "overhead_samples_ms": [round(v, 1) for v in overhead],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--concurrent", type=int, default=20)
    args = parser.parse_args()
    load_before = os.getloadavg()
    measured = asyncio.run(_measure(args.runs, args.concurrent))
    load_after = os.getloadavg()
    result = {
        "benchmark": (
            "lifecycle overhead: KeptnWorkloadVersion (and its KeptnAppVersion) created to the "
            "scheduling gate removed, minus the pre-deployment task's own run time"
        ),
        "start_of_clock": "workload version creation (webhook and aggregator not included)",
        "command": (f"python bench/lifecycle.py --runs {args.runs} --concurrent {args.concurrent}"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
        "python": platform.python_version(),
        "load_average_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "stack": "Kafka 4.1.1, Kubernetes v1.34.1 (local stack)",
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "goal": {"p50_ms": 300, "p99_ms": 1000},
        "keptn_polling_floor_s": list(KEPTN_POLLING_FLOOR_S),
        **measured,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "lifecycle.json").write_text(json.dumps(result, indent=2) + "\n")
    print("| mode | runs | p50 ms | p90 ms | p99 ms | max ms | end-to-end p50 ms | task p50 ms |")
    print("|---|---|---|---|---|---|---|---|")
    for mode in ("sequential", "burst"):
        r = measured.get(mode)
        if not r:
            continue
        print(
            f"| {mode} | {r['runs']} | {r['overhead_p50_ms']} | {r['overhead_p90_ms']} | "
            f"{r['overhead_p99_ms']} | {r['overhead_max_ms']} | {r['end_to_end_p50_ms']} | "
            f"{r['task_run_time_p50_ms']} |"
        )


if __name__ == "__main__":
    main()
