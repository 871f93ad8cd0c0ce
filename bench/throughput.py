"""Throughput to Completed, with 1 and with 2 instances of each bus-driven service; their memory.

Not a test: a measurement on the local stack. For each instance count the bench starts its own
app-aggregator, scheduler, task-runner and evaluator processes (``python -m klt_<service>``,
the devstack's environment, their own probe ports) on a private topic prefix, shard and runner
class, in a fresh namespace that carries the shard labels, so the stack's own copies of these
services keep away from it. The stack's webhook is used as it is: the namespace is enabled, so
every pod really goes through admission and gets the scheduling gate. The webhook publishes
``PodAdmitted`` on the stack's topics; a relay in the bench (a tail of the stack's
``klt.discovery`` that joins no consumer group) republishes the events of the bench's namespace
on the private prefix, one extra bus hop of about a millisecond. Not isolated: the aggregator's
consumer group name is fixed (the bench's aggregators join ``klt-app-aggregator`` on their own
topics, which rebalances that group), and a task-runner reconciles every KeptnTaskDefinition in
the cluster whatever its runner class.

Each workload is a Deployment (one replica) with one pre-deployment task (a container task,
busybox ``sh -c true``, which the node agent really runs as a Job's pod) and one
pre-deployment evaluation (one objective, answered by a real PromQL query to the stack's
Prometheus), so all four bus-driven services take part in every lifecycle. All workloads are
created at once; the bench watches the KeptnAppVersions and records when each one reaches
``Completed``. Throughput is workloads / (last Completed - first create).

Memory: every 0.5 s the bench reads VmRSS of each of its service processes from /proc, idle
(after start-up, before any workload) and under load; VmHWM at the end is the peak.

    ./klt dev up && .venv/bin/python bench/throughput.py [--workloads 40] [--instances 1,2]

Writes bench/results/throughput.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from klt_cli.devstack import stack as devstack
from klt_common.clients import bus, inspect
from klt_common.clients import cluster as k8s
from klt_common.configs.settings import BusSettings, ClusterSettings
from klt_common.structs import discovery, events

RESULTS = Path(__file__).resolve().parent / "results"
KAV = k8s.keptn_resource("KeptnAppVersion")
EVALUATOR_SHARD = "evaluator.klt.sh/shard"
SCHEDULER_SHARD = "klt.sh/scheduler-shard"
AGGREGATOR_SHARD = "klt.sh/aggregator-shard"
RUNNER_CLASS = "klt.dev/runner-class"
PROMETHEUS = f"http://127.0.0.1:{devstack.PROMETHEUS_PORT}"
SERVICES = ("app-aggregator", "scheduler", "task-runner", "evaluator")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def _cpu_seconds(pid: int) -> float:
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


def _rss_kib(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0])
    return out


@dataclass
class Process:
    service: str
    index: int
    port: int
    log: Path
    proc: asyncio.subprocess.Process
    samples: dict[str, list[int]] = field(default_factory=lambda: {"idle": [], "load": []})


@dataclass
class Setup:
    run_id: str
    namespace: str
    shard: str
    bus: BusSettings
    info: devstack.StackInfo

    def env(self, service: str, index: int, port: int) -> dict[str, str]:
        # What `klt dev up` gives the stack's copy (devstack.Stack._child_env and the service's
        # spec), plus the private prefix, shard, runner class and consumer groups.
        env = self.info.env(os.environ)
        env.update(
            {
                "KLT_CLUSTER__KUBECONFIG": str(self.info.kubeconfig),
                "KLT_BUS__BOOTSTRAP_SERVERS": self.info.kafka_bootstrap,
                "KLT_BUS__TOPIC_PREFIX": self.bus.topic_prefix,
                "KLT_OBSERVABILITY__HTTP_HOST": "127.0.0.1",
                "KLT_OBSERVABILITY__HTTP_PORT": str(port),
                "KLT_OBSERVABILITY__LOG_JSON": "false",
                "KLT_OBSERVABILITY__LOG_LEVEL": "WARNING",
                "KLT_INSTANCE_ID": f"bench-{self.run_id}-{service}-{index}",
            }
        )
        env.update(
            {
                "app-aggregator": {
                    "KLT_AGGREGATION__SHARD": self.shard,
                    # The namespace scope holds even for an aggregator without shard support.
                    "KLT_AGGREGATION__NAMESPACE": self.namespace,
                },
                "scheduler": {
                    "KLT_SCHEDULER__SHARD": self.shard,
                    "KLT_SCHEDULER__NAMESPACE": self.namespace,
                    "KLT_SCHEDULER__CONSUMER_GROUP": f"klt-scheduler-{self.shard}",
                },
                "task-runner": {
                    "KLT_TASKS__RUNNER_CLASS": self.shard,
                    "KLT_TASKS__CONSUMER_GROUP": f"klt-task-runner-{self.shard}",
                },
                "evaluator": {
                    "KLT_EVALUATOR__SHARD": self.shard,
                    "KLT_EVALUATOR__CONSUMER_GROUP": f"klt-evaluator-{self.shard}",
                },
            }[service]
        )
        return env


async def _start(setup: Setup, service: str, index: int, workdir: Path) -> Process:
    port = _free_port()
    log = workdir / f"{service}-{index}.log"
    with log.open("wb") as sink:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            f"klt_{service.replace('-', '_')}",
            env=setup.env(service, index, port),
            stdout=sink,
            stderr=sink,
            stdin=asyncio.subprocess.DEVNULL,
        )
    return Process(service, index, port, log, proc)


async def _wait_ready(processes: list[Process], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        for p in processes:
            while True:
                if p.proc.returncode is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{p.service}-{p.index} did not become ready; see {p.log}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"http://127.0.0.1:{p.port}/readyz") as response:
                        if response.status == 200:
                            break
                await asyncio.sleep(0.2)


async def _stop(processes: list[Process]) -> None:
    for p in processes:
        if p.proc.returncode is None:
            p.proc.send_signal(signal.SIGTERM)
    for p in processes:
        try:
            await asyncio.wait_for(p.proc.wait(), 30)
        except TimeoutError:
            p.proc.kill()
            await p.proc.wait()


async def _sample(processes: list[Process], phase: list[str], stop: asyncio.Event) -> None:
    while not stop.is_set():
        for p in processes:
            rss = _rss_kib(p.proc.pid).get("VmRSS")
            if rss is not None:
                p.samples[phase[0]].append(rss)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)


async def _relay(setup: Setup, stop: asyncio.Event, started: asyncio.Event) -> int:
    """Republish the stack webhook's PodAdmitted events of our namespace on our prefix."""
    stack_bus = BusSettings(bootstrap_servers=setup.info.kafka_bootstrap)
    topic = events.Topic.DISCOVERY.full_name("")
    relayed = 0
    async with bus.Publisher(setup.bus, client_id=f"bench-relay-{setup.run_id}") as publisher:
        records = inspect.tail(stack_bus, [topic], stop=stop)
        started.set()
        async for record in records:
            envelope = json.loads(record.value or b"{}")
            data = envelope.get("data") or {}
            if (
                envelope.get("type") == events.PodAdmitted.event_type
                and data.get("namespace") == setup.namespace
            ):
                payload = events.PodAdmitted.model_validate(data)
                await publisher.publish(payload, source="/bench/relay")
                relayed += 1
    return relayed


def _deployment(name: str) -> dict[str, Any]:
    labels = {"component": name}
    annotations = {
        discovery.WORKLOAD: name,
        discovery.VERSION: "1",
        discovery.PRE_TASKS: "noop",
        discovery.PRE_EVALUATIONS: "prometheus-up",
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": {
                    "terminationGracePeriodSeconds": 0,
                    "containers": [{"name": "web", "image": "nginx:1.27"}],
                },
            },
        },
    }


async def _prepare(cluster: k8s.ClusterClient, setup: Setup) -> None:
    ns, shard = setup.namespace, setup.shard
    await cluster.create(
        k8s.NAMESPACES,
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": ns,
                "labels": {SCHEDULER_SHARD: shard, AGGREGATOR_SHARD: shard},
                "annotations": {discovery.NAMESPACE_ENABLED: "enabled"},
            },
        },
    )
    objects: list[tuple[k8s.Resource, dict[str, Any]]] = [
        (
            k8s.keptn_resource("KeptnTaskDefinition"),
            {
                "apiVersion": "lifecycle.keptn.sh/v1",
                "kind": "KeptnTaskDefinition",
                # Copied onto each KeptnTask: only the bench's task-runners take them.
                "metadata": {"name": "noop", "labels": {RUNNER_CLASS: shard}},
                "spec": {
                    "container": {"name": "noop", "image": "busybox:1.36", "command": ["true"]},
                    "ttlSecondsAfterFinished": 5,
                },
            },
        ),
        (
            k8s.keptn_resource("KeptnMetricsProvider"),
            {
                "apiVersion": "metrics.keptn.sh/v1",
                "kind": "KeptnMetricsProvider",
                "metadata": {"name": "prometheus"},
                "spec": {"type": "prometheus", "targetServer": PROMETHEUS},
            },
        ),
        (
            k8s.keptn_resource("KeptnMetric"),
            {
                "apiVersion": "metrics.keptn.sh/v1",
                "kind": "KeptnMetric",
                "metadata": {"name": "prometheus-up", "labels": {EVALUATOR_SHARD: shard}},
                "spec": {
                    "provider": {"name": "prometheus"},
                    "query": "count(up == 1)",
                    "fetchIntervalSeconds": 5,
                },
            },
        ),
        (
            k8s.keptn_resource("KeptnEvaluationDefinition"),
            {
                "apiVersion": "lifecycle.keptn.sh/v1",
                "kind": "KeptnEvaluationDefinition",
                # Copied onto each KeptnEvaluation: only the bench's evaluators take them.
                "metadata": {"name": "prometheus-up", "labels": {EVALUATOR_SHARD: shard}},
                "spec": {
                    "objectives": [
                        {"keptnMetricRef": {"name": "prometheus-up"}, "evaluationTarget": ">0"}
                    ]
                },
            },
        ),
    ]
    for resource, body in objects:
        await cluster.create(resource, body, ns)


class Completions:
    """When each app version (one per workload: single-service apps) reached Completed."""

    def __init__(self) -> None:
        self.completed: dict[str, float] = {}
        self.failed: dict[str, str] = {}
        self.changed = asyncio.Event()

    def on_event(self, event: k8s.WatchEvent) -> None:
        obj = event.object
        app = (obj.get("spec") or {}).get("appName", "")
        status = obj.get("status") or {}
        if status.get("currentPhase") == "Completed" and status.get("status") == "Succeeded":
            self.completed.setdefault(app, time.perf_counter())
            self.changed.set()
        elif status.get("status") == "Failed":
            self.failed.setdefault(app, str(status.get("currentPhase")))
            self.changed.set()


async def _wave(
    cluster: k8s.ClusterClient,
    setup: Setup,
    completions: Completions,
    names: list[str],
    timeout: float,
) -> dict[str, Any]:
    created: dict[str, float] = {}
    gate = asyncio.Semaphore(16)

    async def create(name: str) -> None:
        async with gate:
            await cluster.create(k8s.DEPLOYMENTS, _deployment(name), setup.namespace)
            created[name] = time.perf_counter()

    first = time.perf_counter()
    await asyncio.gather(*(create(n) for n in names))
    deadline = first + timeout
    while not all(n in completions.completed or n in completions.failed for n in names):
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            break
        completions.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(completions.changed.wait(), min(remaining, 1.0))
    done = [n for n in names if n in completions.completed]
    latencies = [(completions.completed[n] - created[n]) * 1000 for n in done]
    last = max((completions.completed[n] for n in done), default=first)
    wall = last - first
    return {
        "workloads": len(names),
        "completed": len(done),
        "failed": {n: completions.failed[n] for n in names if n in completions.failed},
        "timed_out": [
            n for n in names if n not in completions.completed and n not in completions.failed
        ],
        "create_all_seconds": round(max(created.values()) - first, 2),
        "wall_seconds": round(wall, 2),
        "workloads_per_second": round(len(done) / wall, 3) if wall > 0 else None,
        "latency_ms": {
            "p50": _pct(latencies, 0.5),
            "p90": _pct(latencies, 0.9),
            "p99": _pct(latencies, 0.99),
            "max": round(max(latencies), 1),
        }
        if latencies
        else None,
    }


def _stamp(value: Any) -> datetime | None:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value else None


def _breakdown(versions: list[dict[str, Any]]) -> dict[str, float | None]:
    """Median seconds per step, from the workload versions' own status timestamps."""
    steps: dict[str, list[float]] = {"pre_task": [], "pre_evaluation": [], "deployment": []}
    for kwv in versions:
        status = kwv.get("status") or {}
        for step, key in (
            ("pre_task", "preDeploymentTaskStatus"),
            ("pre_evaluation", "preDeploymentEvaluationTaskStatus"),
        ):
            for item in status.get(key) or []:
                start, end = _stamp(item.get("startTime")), _stamp(item.get("endTime"))
                if start and end:
                    steps[step].append((end - start).total_seconds())
        post = (status.get("phaseTraceIDs") or {}).get("WorkloadPostDeployTasks") or {}
        start, end = _stamp(status.get("deploymentStartTime")), _stamp(post.get("klt-start"))
        if start and end:
            steps["deployment"].append((end - start).total_seconds())
    return {
        f"{step}_median_s": round(statistics.median(v), 2) if v else None
        for step, v in steps.items()
    }


async def _pod_room(cluster: k8s.ClusterClient) -> dict[str, int]:
    """Pods the nodes take, and pods already bound to them. On a shared stack other runs' pods
    can fill the node agent's nodes; workloads then fail in their deployment phase for want of
    a node, which measures the node's size, not klt."""
    nodes = await cluster.list(k8s.NODES)
    pods = await cluster.list(k8s.PODS)
    capacity = sum(
        int((n.get("status") or {}).get("allocatable", {}).get("pods", 0)) for n in nodes.items
    )
    bound = sum(
        1
        for p in pods.items
        if p["spec"].get("nodeName") and p["status"].get("phase") not in ("Succeeded", "Failed")
    )
    return {"node_pod_capacity": capacity, "pods_on_nodes": bound}


def _memory(processes: list[Process]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in processes:
        idle, load = p.samples["idle"], p.samples["load"]
        out[f"{p.service}-{p.index}"] = {
            "idle_rss_mib": round(statistics.median(idle) / 1024, 1) if idle else None,
            "load_rss_max_mib": round(max(load) / 1024, 1) if load else None,
            "load_rss_median_mib": round(statistics.median(load) / 1024, 1) if load else None,
            "hwm_mib": round(_rss_kib(p.proc.pid).get("VmHWM", 0) / 1024, 1),
        }
    return out


async def _one_config(
    info: devstack.StackInfo, instances: int, workloads: int, timeout: float
) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:8]
    setup = Setup(
        run_id=run_id,
        namespace=f"bench-tp-{run_id}",
        shard=f"bench-{run_id}",
        bus=BusSettings(bootstrap_servers=info.kafka_bootstrap, topic_prefix=f"bench{run_id}."),
        info=info,
    )
    workdir = Path(tempfile.mkdtemp(prefix=f"klt-bench-throughput-{instances}x-"))
    print(f"{instances}x: namespace {setup.namespace}, logs in {workdir}", file=sys.stderr)
    await bus.ensure_topics(setup.bus, list(events.Topic))
    cluster = await k8s.ClusterClient.connect(ClusterSettings(kubeconfig=str(info.kubeconfig)))
    processes: list[Process] = []
    stop = asyncio.Event()
    tasks: list[asyncio.Task[Any]] = []
    try:
        room = await _pod_room(cluster)
        # Each workload needs a place for its pod and, for a few seconds, its task's pod.
        if room["node_pod_capacity"] - room["pods_on_nodes"] < workloads + 10:
            raise RuntimeError(
                f"the nodes have room for {room['node_pod_capacity'] - room['pods_on_nodes']} "
                f"more pods ({room}); {workloads} workloads need {workloads + 10}: wait for other "
                "runs to finish or pass fewer --workloads"
            )
        await _prepare(cluster, setup)
        processes.extend(
            [await _start(setup, s, i, workdir) for s in SERVICES for i in range(instances)]
        )
        await _wait_ready(processes)
        phase = ["idle"]
        tasks.append(asyncio.create_task(_sample(processes, phase, stop)))
        relay_started = asyncio.Event()
        relay = asyncio.create_task(_relay(setup, stop, relay_started))
        tasks.append(relay)
        completions = Completions()
        cache = k8s.WatchCache(cluster, KAV, namespace=setup.namespace)
        queue = cache.subscribe()
        tasks.append(asyncio.create_task(cache.run(stop)))
        await cache.wait_synced(30)

        async def feed() -> None:
            while True:
                completions.on_event(await queue.get())

        feeder = asyncio.create_task(feed())
        await relay_started.wait()
        await asyncio.sleep(5)  # idle memory; consumer groups settle; the relay seeks to the end
        # Warm-up (not counted): connections, the first Job and busybox pod, the first query.
        phase[0] = "load"
        warm = await _wave(cluster, setup, completions, ["warm-0", "warm-1"], timeout)
        if warm["completed"] != 2:
            raise RuntimeError(f"warm-up did not complete: {warm}; logs in {workdir}")
        room = await _pod_room(cluster)  # again: other runs may have started meanwhile
        load_before = os.getloadavg()
        cpu_before = [_cpu_seconds(p.proc.pid) for p in processes]
        measured = await _wave(
            cluster, setup, completions, [f"w-{i}" for i in range(workloads)], timeout
        )
        load_after = os.getloadavg()
        cpu: dict[str, float] = {}
        # CPU seconds each service spent on the measured wave, all its instances together.
        for p, before in zip(processes, cpu_before, strict=True):
            cpu[p.service] = round(cpu.get(p.service, 0.0) + _cpu_seconds(p.proc.pid) - before, 2)
        memory = _memory(processes)
        listed = await cluster.list(k8s.keptn_resource("KeptnWorkloadVersion"), setup.namespace)
        breakdown = _breakdown(
            [v for v in listed.items if v["spec"].get("workloadName", "").startswith("w-")]
        )
        stop.set()
        feeder.cancel()
        relayed = 0
        for task in asyncio.as_completed(tasks):
            with contextlib.suppress(asyncio.CancelledError):
                value = await task
                if isinstance(value, int):
                    relayed = value
        if measured["completed"] == workloads:  # the logs are kept when something went wrong
            shutil.rmtree(workdir, ignore_errors=True)
        return {
            "instances_per_service": instances,
            **measured,
            "pod_admitted_relayed": relayed,
            "cpu_seconds_per_service": cpu,
            "steps": breakdown,
            **room,
            "load_average_1m_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
            "memory": memory,
        }
    finally:
        stop.set()
        await _stop(processes)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(k8s.ApiError):
            await cluster.delete(k8s.NAMESPACES, setup.namespace)
        await cluster.close()
        with contextlib.suppress(Exception):  # left behind, topics pile up in the broker
            await asyncio.wait_for(inspect.delete_prefixed_topics(setup.bus), 60)


async def _main(instances: list[int], workloads: int, timeout: float) -> list[dict[str, Any]]:
    info = devstack.StackInfo.from_env()
    configs = []
    for n in instances:
        try:
            configs.append(await _one_config(info, n, workloads, timeout))
        except RuntimeError as exc:  # recorded, so that the other instance count still counts
            print(f"{n}x: {exc}", file=sys.stderr)
            configs.append({"instances_per_service": n, "error": str(exc)})
    return configs


def _table(configs: list[dict[str, Any]]) -> str:
    rows = [
        "| instances per service | workloads | completed | workloads/s | p50 ms | p99 ms |",
        "|---|---|---|---|---|---|",
    ]
    for c in configs:
        if "error" in c:
            rows.append(f"| {c['instances_per_service']} | error: {c['error']} |")
            continue
        lat = c["latency_ms"] or {}
        rows.append(
            f"| {c['instances_per_service']} | {c['workloads']} | {c['completed']} | "
            f"{c['workloads_per_second']} | {lat.get('p50')} | {lat.get('p99')} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--workloads", type=int, default=40)
    parser.add_argument("--instances", default="1,2", help="comma-separated instance counts")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per wave")
    args = parser.parse_args()
    load_before = os.getloadavg()
    configs = asyncio.run(
        _main([int(n) for n in args.instances.split(",")], args.workloads, args.timeout)
    )
    load_after = os.getloadavg()
    result = {
        "benchmark": (
            "throughput to Completed: Deployments (1 pre-deployment container task, 1 "
            "pre-deployment evaluation each) created at once, KeptnAppVersion Completed"
        ),
        "command": " ".join(["python bench/throughput.py", *sys.argv[1:]]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
        "python": platform.python_version(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "load_average_1m_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "configs": configs,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    print(_table(configs))


if __name__ == "__main__":
    main()
