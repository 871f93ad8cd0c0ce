"""Task-runner speed: task request → Job created, Job finished → TaskFinished, and a burst.

Not a test: a measurement on the local stack (real Kafka, apiserver, controller-manager and the
node agent running every pod's process). The task-runner runs as its own process, as it does
in a cluster, with its own topic prefix and runner class, so the stack's shared task-runner
never touches the bench's tasks.

Each task is a container task whose pod runs ``sh -c true`` in busybox (the node agent runs it
as a real host process), so every task goes the whole way: KeptnTask → Job → pod → exit code →
Job condition → TaskFinished → status. The bench itself watches Jobs and consumes TaskFinished,
and timestamps what it sees:

- **request → Job created**: from the moment the KeptnTask exists (create returned; the
  TaskRequested event is published right after, as the scheduler does) to the Job's ADDED
  event on the bench's own watch;
- **Job finished → TaskFinished**: from the first watch event showing the Job finished
  (``SuccessCriteriaMet``/``Complete``) to the TaskFinished record reaching the bench's
  consumer.

Two phases: *paced* (one task every 50 ms: latency without queueing) and *burst* (N tasks
created and requested at once, 64 at a time: nothing may be lost, one Job per task). Between
them, a baseline: the bench's own POST of 100 suspended Jobs, i.e. what the apiserver alone
costs on this machine at that moment (the floor under "request → Job created").

    ./klt dev up && .venv/bin/python bench/task_runner.py [--paced 200] [--burst 500]

Writes bench/results/task_runner.json and prints a Markdown table for docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from klt_cli.devstack import stack as devstack
from klt_common.clients import bus
from klt_common.clients import cluster as k8s
from klt_common.configs.settings import BusSettings, ClusterSettings
from klt_common.structs import events

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent
TASKS = k8s.keptn_resource("KeptnTask")
DEFINITIONS = k8s.keptn_resource("KeptnTaskDefinition")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return ordered[index]


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_ms": round(_pct(values, 50), 2),
        "p90_ms": round(_pct(values, 90), 2),
        "p99_ms": round(_pct(values, 99), 2),
        "max_ms": round(max(values), 2) if values else float("nan"),
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Observer:
    """Timestamps Job ADDED / finished events and TaskFinished records, by task."""

    def __init__(self) -> None:
        self.created: dict[str, float] = {}  # task uid -> Job ADDED seen
        self.job_finished: dict[str, float] = {}  # task uid -> first finished condition seen
        self.jobs_per_task: dict[str, set[str]] = {}
        self.finished: dict[str, float] = {}  # task name -> TaskFinished received
        self.finished_ids: dict[str, set[str]] = {}
        self.states: dict[str, str] = {}

    def on_job(self, event: k8s.WatchEvent) -> None:
        now = time.perf_counter()
        meta = event.object.get("metadata", {})
        uid = (meta.get("labels") or {}).get("klt.dev/task-uid")
        if not uid:
            return
        self.jobs_per_task.setdefault(uid, set()).add(meta.get("name", ""))
        self.created.setdefault(uid, now)
        conditions = (event.object.get("status") or {}).get("conditions") or []
        if any(
            c.get("status") == "True"
            and c.get("type") in ("Complete", "SuccessCriteriaMet", "Failed", "FailureTarget")
            for c in conditions
        ):
            self.job_finished.setdefault(uid, now)

    async def on_finished(
        self, envelope: events.Envelope[events.TaskFinished], _: bus.Coordinates
    ) -> None:
        name = envelope.data.task_name
        self.finished.setdefault(name, time.perf_counter())
        self.finished_ids.setdefault(name, set()).add(envelope.id)
        self.states[name] = envelope.data.state


async def _watch_jobs(
    client: k8s.ClusterClient, namespace: str, observer: Observer, stop: asyncio.Event
) -> None:
    cache = k8s.WatchCache(client, k8s.JOBS, namespace=namespace)
    queue = cache.subscribe()
    runner = asyncio.create_task(cache.run(stop))
    await cache.wait_synced()
    try:
        while not stop.is_set():
            getter = asyncio.ensure_future(queue.get())
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait({getter, stopped}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if not getter.done():
                getter.cancel()
                break
            observer.on_job(getter.result())
    finally:
        await runner


def _task(name: str, runner_class: str) -> dict[str, Any]:
    return {
        "apiVersion": "lifecycle.keptn.sh/v1",
        "kind": "KeptnTask",
        "metadata": {"name": name, "labels": {"klt.dev/runner-class": runner_class}},
        "spec": {
            "taskDefinition": "noop",
            "context": {"appName": "bench", "objectType": "App", "taskType": "pre"},
            "retries": 0,
        },
    }


async def _request(
    client: k8s.ClusterClient,
    publisher: bus.Publisher,
    namespace: str,
    name: str,
    runner_class: str,
    requested: dict[str, tuple[str, float]],
) -> None:
    created = await client.create(TASKS, _task(name, runner_class), namespace)
    requested[name] = (created["metadata"]["uid"], time.perf_counter())
    await publisher.publish(
        events.TaskRequested(namespace=namespace, app="bench", task_name=name, phase="bench"),
        source="/bench",
    )


async def _wait(predicate: Any, timeout: float, what: str, interval: float = 0.05) -> float:
    start = time.perf_counter()
    while not predicate():
        if time.perf_counter() - start > timeout:
            raise TimeoutError(what)
        await asyncio.sleep(interval)
    return time.perf_counter() - start


def _latencies(
    names: Iterable[str], requested: dict[str, tuple[str, float]], observer: Observer
) -> tuple[list[float], list[float]]:
    create, finish = [], []
    for name in names:
        uid, t0 = requested[name]
        if uid in observer.created:
            create.append((observer.created[uid] - t0) * 1000)
        if uid in observer.job_finished and name in observer.finished:
            finish.append((observer.finished[name] - observer.job_finished[uid]) * 1000)
    return create, finish


async def _phase(
    client: k8s.ClusterClient,
    publisher: bus.Publisher,
    namespace: str,
    runner_class: str,
    observer: Observer,
    names: list[str],
    *,
    pace: float | None,
    concurrency: int,
    timeout: float,
) -> dict[str, Any]:
    requested: dict[str, tuple[str, float]] = {}
    gate = asyncio.Semaphore(concurrency)

    async def one(name: str) -> None:
        async with gate:
            await _request(client, publisher, namespace, name, runner_class, requested)

    started = time.perf_counter()
    if pace is None:
        await asyncio.gather(*(one(n) for n in names))
    else:
        pending = []
        for name in names:
            pending.append(asyncio.create_task(one(name)))
            await asyncio.sleep(pace)
        await asyncio.gather(*pending)
    submitted = time.perf_counter() - started
    all_created = await _wait(
        lambda: all(requested[n][0] in observer.created for n in names), timeout, "jobs created"
    )
    all_finished = await _wait(
        lambda: all(n in observer.finished for n in names), timeout, "tasks finished"
    )
    # Statuses: every task must end Succeeded (the event comes first, the status right after).
    succeeded = 0
    for _ in range(600):
        listed = await client.list(TASKS, namespace)
        by_name = {t["metadata"]["name"]: t for t in listed.items}
        succeeded = sum(
            1
            for n in names
            if (by_name.get(n, {}).get("status") or {}).get("status") == "Succeeded"
        )
        if succeeded == len(names):
            break
        await asyncio.sleep(0.1)
    create, finish = _latencies(names, requested, observer)
    jobs = [len(observer.jobs_per_task.get(requested[n][0], ())) for n in names]
    return {
        "tasks": len(names),
        "submit_seconds": round(submitted, 2),
        "all_jobs_created_seconds": round(submitted + all_created, 2),
        "all_finished_seconds": round(submitted + all_created + all_finished, 2),
        "task_finished_events": sum(1 for n in names if n in observer.finished),
        "distinct_event_ids_per_task_max": max(
            len(observer.finished_ids.get(n, ())) for n in names
        ),
        "tasks_succeeded_in_status": succeeded,
        "jobs_per_task_max": max(jobs),
        "jobs_per_task_min": min(jobs),
        "request_to_job_created": _summary(create),
        "job_finished_to_task_finished": _summary(finish),
    }


async def _baseline(client: k8s.ClusterClient, namespace: str, n: int) -> dict[str, float]:
    """The apiserver's own Job POST round trip at the time of the run (suspended Jobs, so no
    pods): the floor under "request → Job created", whatever the task-runner does."""
    times = []
    for i in range(n):
        job = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": f"baseline-{i}"},
            "spec": {
                "suspend": True,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "c", "image": "busybox:1.36"}],
                    }
                },
            },
        }
        started = time.perf_counter()
        await client.create(k8s.JOBS, job, namespace)
        times.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(0.05)
    return _summary(times)


async def _wait_ready(port: int, proc: subprocess.Popen[bytes]) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(600):
            if proc.poll() is not None:
                raise RuntimeError("task-runner exited during start-up")
            try:
                async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise TimeoutError("task-runner never became ready")


async def main(paced: int, burst: int) -> dict[str, Any]:
    info = devstack.StackInfo.from_env()
    run_id = uuid.uuid4().hex[:8]
    prefix = f"bench{run_id}."
    runner_class = f"bench-{run_id}"
    namespace = f"bench-tr-{run_id}"
    bus_settings = BusSettings(bootstrap_servers=info.kafka_bootstrap, topic_prefix=prefix)
    cluster_settings = ClusterSettings(kubeconfig=str(info.kubeconfig))
    await bus.ensure_topics(bus_settings, list(events.Topic))
    port = _free_port()
    env = {
        **os.environ,
        "KLT_CLUSTER__KUBECONFIG": str(info.kubeconfig),
        "KLT_BUS__BOOTSTRAP_SERVERS": info.kafka_bootstrap,
        "KLT_BUS__TOPIC_PREFIX": prefix,
        "KLT_TASKS__RUNNER_CLASS": runner_class,
        "KLT_OBSERVABILITY__HTTP_HOST": "127.0.0.1",
        "KLT_OBSERVABILITY__HTTP_PORT": str(port),
        "KLT_OBSERVABILITY__LOG_LEVEL": "WARNING",
        "KLT_INSTANCE_ID": f"bench-{run_id}",
    }
    log = Path(tempfile.gettempdir()) / f"klt-bench-task-runner-{run_id}.log"
    with log.open("wb") as log_file:
        proc = subprocess.Popen(  # noqa: ASYNC220 - started once, before any measurement
            [sys.executable, "-m", "klt_task_runner"], env=env, stdout=log_file, stderr=log_file
        )
    client = await k8s.ClusterClient.connect(cluster_settings)
    stop = asyncio.Event()
    observer = Observer()
    consumer = bus.Consumer(bus_settings, group_id=f"bench-{run_id}", client_id="bench")
    consumer.register(events.TaskFinished, observer.on_finished)
    try:
        await _wait_ready(port, proc)
        await client.create(
            k8s.NAMESPACES,
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        )
        await client.create(
            DEFINITIONS,
            {
                "apiVersion": "lifecycle.keptn.sh/v1",
                "kind": "KeptnTaskDefinition",
                "metadata": {"name": "noop"},
                "spec": {
                    "container": {
                        "name": "noop",
                        "image": "busybox:1.36",
                        "command": ["sh", "-c", "true"],
                    },
                    # Finished Jobs (and their pods) leave quickly, so a burst does not fill
                    # the node; the runner reads a removed Job's outcome from its watch.
                    "ttlSecondsAfterFinished": 5,
                },
            },
            namespace,
        )
        watcher = asyncio.create_task(_watch_jobs(client, namespace, observer, stop))
        consuming = asyncio.create_task(consumer.run(stop))
        async with bus.Publisher(bus_settings, client_id="bench-scheduler") as publisher:
            # Warm-up: connections, the runner's first Job, the node agent's first busybox.
            await _phase(
                client, publisher, namespace, runner_class, observer,
                [f"warm-{n}" for n in range(5)], pace=0.2, concurrency=1, timeout=120,
            )  # fmt: skip
            paced_result = await _phase(
                client, publisher, namespace, runner_class, observer,
                [f"paced-{n}" for n in range(paced)], pace=0.05, concurrency=paced, timeout=300,
            )  # fmt: skip
            baseline = await _baseline(client, namespace, 100)
            burst_result = await _phase(
                client, publisher, namespace, runner_class, observer,
                [f"burst-{n}" for n in range(burst)], pace=None, concurrency=64, timeout=900,
            )  # fmt: skip
        stop.set()
        await asyncio.gather(watcher, consuming)
    finally:
        stop.set()
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        await client.delete(k8s.NAMESPACES, namespace)
        await client.close()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "setup": (
            "task-runner as its own process (python -m klt_task_runner, 64 workers), local "
            "stack: Kafka 4.1.1, Kubernetes v1.34.1, node agent; container tasks "
            "(busybox sh -c true); Jobs and TaskFinished observed by the bench's own watch "
            "and consumer"
        ),
        "job_post_baseline": baseline,
        "paced": paced_result,
        "burst": burst_result,
    }


def _table(result: dict[str, Any]) -> str:
    rows = [
        "| phase | tasks | metric | p50 ms | p90 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|---|",
    ]
    b = result["job_post_baseline"]
    rows.append(
        f"| baseline | {b['n']} | apiserver Job POST alone | {b['p50_ms']} | {b['p90_ms']} | "
        f"{b['p99_ms']} | {b['max_ms']} |"
    )
    for phase in ("paced", "burst"):
        data = result[phase]
        for metric in ("request_to_job_created", "job_finished_to_task_finished"):
            s = data[metric]
            rows.append(
                f"| {phase} | {data['tasks']} | {metric.replace('_', ' ')} | {s['p50_ms']} | "
                f"{s['p90_ms']} | {s['p99_ms']} | {s['max_ms']} |"
            )
    return "\n".join(rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--paced", type=int, default=200)
    parser.add_argument("--burst", type=int, default=500)
    args = parser.parse_args()
    result = asyncio.run(main(args.paced, args.burst))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "task_runner.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(_table(result))
