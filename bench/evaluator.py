"""Evaluator load and latency on the local stack, against a real local Prometheus.

Not a test: measurements. Three parts:

1. **Load**: 1000 KeptnMetrics with a 10 s interval, each an instant PromQL query for its own
   series, on one evaluator process (started as the service runs: ``python -m klt_evaluator``).
   Reported: the evaluator's CPU and memory in steady state, the fetch rate, how stale the
   metrics get (``now - lastUpdated``), and the CPU the apiserver and etcd spend on the status
   writes.
2. **Evaluation round, fetch and compare**: one Prometheus query through the evaluator's own
   provider code (shared session, POST /api/v1/query, answer parsing) plus the target comparison,
   timed in-process; the target is p99 <= 50 ms.
3. **Evaluation end to end**: create a KeptnEvaluation and wait for its ``evaluation.finished``
   on Kafka, through the evaluator process (watch, apiserver reads, status write, publish).

    ./klt dev up --no-services && .venv/bin/python bench/evaluator.py [--metrics 1000]

Writes bench/results/evaluator.json and prints a Markdown summary for docs/performance.md.
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
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from klt_cli.devstack import build, paths
from klt_cli.devstack import stack as devstack
from klt_common.clients import bus, inspect
from klt_common.clients import cluster as k8s
from klt_common.configs.settings import BusSettings, ClusterSettings
from klt_common.structs import events
from klt_common.structs.api.metrics import KeptnMetricsProvider
from klt_evaluator.evaluations import judge
from klt_evaluator.providers import ProviderConfig, Providers, Query, SecretReader, Transport
from klt_evaluator.settings import SHARD_LABEL

RESULTS = Path(__file__).resolve().parent / "results"
METRIC = k8s.keptn_resource("KeptnMetric")
TICKS = os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))], 2)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def _memory_mib(pid: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = round(int(rest.split()[0]) / 1024, 1)
    return out


def _stack_pids() -> dict[str, int]:
    stack = devstack.Stack()
    return {s.name: s.pid for s in stack.status() if s.pid is not None and s.alive}


# --- a local Prometheus scraping an exporter of 1000 series ------------------------------------


class Exporter:
    def __init__(self, count: int) -> None:
        self.count = count
        self.port = _free_port()
        self._runner: web.AppRunner | None = None

    async def _metrics(self, _request: web.Request) -> web.Response:
        lines = ["# TYPE klt_bench gauge"]
        lines += [f'klt_bench{{i="{i}"}} {i % 97}' for i in range(self.count)]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def _prometheus_binary() -> str:
    found = shutil.which("prometheus") or str(paths.bin_dir(paths.cache_dir()) / "prometheus")
    if not Path(found).is_file():
        build.build_all()
    return found if Path(found).is_file() else "/usr/bin/prometheus"


async def _start_prometheus(
    exporter: Exporter, workdir: Path
) -> tuple[asyncio.subprocess.Process, str]:
    config = workdir / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 2s\nscrape_configs:\n  - job_name: bench\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{exporter.port}']\n"
    )
    port = _free_port()
    process = await asyncio.create_subprocess_exec(
        _prometheus_binary(),
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:
        for _ in range(600):
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(
                    f"{url}/api/v1/query", params={"query": "count(klt_bench)"}
                ) as r:
                    result = (await r.json())["data"]["result"]
                    if result and int(float(result[0]["value"][1])) == exporter.count:
                        return process, url
            await asyncio.sleep(0.2)
    raise RuntimeError("prometheus did not scrape the exporter")


# --- the evaluator process ------------------------------------------------------------------------


async def _start_evaluator(
    info: devstack.StackInfo, shard: str, prefix: str, port: int, log: Path
) -> asyncio.subprocess.Process:
    env = dict(os.environ)
    env.update(info.env())
    env.update(
        {
            "KLT_CLUSTER__KUBECONFIG": str(info.kubeconfig),
            "KLT_BUS__BOOTSTRAP_SERVERS": info.kafka_bootstrap,
            "KLT_BUS__TOPIC_PREFIX": prefix,
            "KLT_EVALUATOR__SHARD": shard,
            "KLT_EVALUATOR__CONSUMER_GROUP": f"klt-evaluator-{shard}",
            "KLT_OBSERVABILITY__HTTP_HOST": "127.0.0.1",
            "KLT_OBSERVABILITY__HTTP_PORT": str(port),
            "KLT_OBSERVABILITY__LOG_LEVEL": "WARNING",
            "KLT_OBSERVABILITY__LOG_JSON": "false",
        }
    )
    with log.open("wb") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "klt_evaluator",
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


async def _scrape(port: int) -> dict[str, float]:
    """The evaluator's own counters and fetch-time histogram."""
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as r:
        text = await r.text()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("klt_evaluator_metric_fetch"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def _histogram_pct(before: dict[str, float], after: dict[str, float], q: float) -> float | None:
    prefix = "klt_evaluator_metric_fetch_seconds_bucket{le="
    buckets = sorted(
        (
            float("inf") if k[len(prefix) + 1 : -2] == "+Inf" else float(k[len(prefix) + 1 : -2]),
            v - before.get(k, 0.0),
        )
        for k, v in after.items()
        if k.startswith(prefix)
    )
    if not buckets or buckets[-1][1] == 0:
        return None
    wanted = buckets[-1][1] * q / 100
    for bound, count in buckets:
        if count >= wanted:
            return bound
    return None


# --- the parts ----------------------------------------------------------------------------------


async def _create_metrics(
    cluster: k8s.ClusterClient, namespace: str, shard: str, indices: range, interval: int
) -> None:
    gate = asyncio.Semaphore(16)

    async def one(i: int) -> None:
        async with gate:
            await cluster.create(
                METRIC,
                {
                    "apiVersion": "metrics.keptn.sh/v1",
                    "kind": "KeptnMetric",
                    "metadata": {
                        "name": f"bench-{i}",
                        "namespace": namespace,
                        "labels": {SHARD_LABEL: shard},
                    },
                    "spec": {
                        "provider": {"name": "prom"},
                        "query": f'klt_bench{{i="{i}"}}',
                        "fetchIntervalSeconds": interval,
                    },
                },
            )

    await asyncio.gather(*(one(i) for i in indices))


async def _statuses(cluster: k8s.ClusterClient, namespace: str) -> list[dict[str, Any]]:
    listed = await cluster.list(METRIC, namespace)
    return [item.get("status") or {} for item in listed.items]


async def _wait_values(cluster: k8s.ClusterClient, namespace: str, count: int) -> None:
    """Poll until ``count`` metrics have a value (a bench, not a service: polling is fine)."""
    for _ in range(1200):
        if sum(1 for s in await _statuses(cluster, namespace) if s.get("value")) >= count:
            return
        await asyncio.sleep(0.5)
    raise RuntimeError(f"fewer than {count} metrics got a value in 10 minutes")


async def _load(
    cluster: k8s.ClusterClient,
    namespace: str,
    shard: str,
    evaluator: asyncio.subprocess.Process,
    port: int,
    count: int,
    interval: int,
    window: float,
) -> dict[str, Any]:
    started = time.monotonic()
    await _create_metrics(cluster, namespace, shard, range(3, count), interval)
    created = time.monotonic() - started
    await _wait_values(cluster, namespace, count)
    all_fetched = time.monotonic() - started
    await asyncio.sleep(2 * interval)  # settle: one period to reach each phase, one steady
    stack = _stack_pids()
    watched = {"evaluator": evaluator.pid} | {
        name: stack[name] for name in ("apiserver", "etcd") if name in stack
    }
    cpu_before = {name: _cpu_seconds(pid) for name, pid in watched.items()}
    scrape_before = await _scrape(port)
    t0 = time.monotonic()
    await asyncio.sleep(window)  # nothing else runs meanwhile: the CPU is the metrics' own
    elapsed = time.monotonic() - t0
    cpu = {
        name: round((_cpu_seconds(pid) - cpu_before[name]) / elapsed * 100, 1)
        for name, pid in watched.items()
    }
    scrape_after = await _scrape(port)
    staleness: list[float] = []
    for _ in range(3):  # afterwards, so that listing 1000 objects is not in the CPU figures
        now = datetime.now(UTC)
        for status in await _statuses(cluster, namespace):
            stamp = datetime.fromisoformat(str(status["lastUpdated"]).replace("Z", "+00:00"))
            staleness.append((now - stamp).total_seconds())
        await asyncio.sleep(interval / 3)
    fetched = sum(
        v - scrape_before.get(k, 0.0)
        for k, v in scrape_after.items()
        if k.startswith("klt_evaluator_metric_fetches_total")
    )
    errors = sum(
        v - scrape_before.get(k, 0.0)
        for k, v in scrape_after.items()
        if k.startswith("klt_evaluator_metric_fetches_total") and 'result="error"' in k
    )
    return {
        "metrics": count,
        "fetch_interval_s": interval,
        "create_all_s": round(created, 1),
        "first_value_for_all_s": round(all_fetched, 1),
        "window_s": round(elapsed, 1),
        "fetches_per_s": round(fetched / elapsed, 1),
        "fetch_errors": int(errors),
        "cpu_percent_of_one_core": cpu,
        "evaluator_memory_mib": _memory_mib(evaluator.pid),
        "staleness_s": {
            "p50": _pct(staleness, 50),
            "p99": _pct(staleness, 99),
            "max": round(max(staleness), 2),
        },
        "fetch_to_status_write_s": {
            "p50_bucket": _histogram_pct(scrape_before, scrape_after, 50),
            "p99_bucket": _histogram_pct(scrape_before, scrape_after, 99),
        },
    }


async def _fetch_and_compare(
    cluster: k8s.ClusterClient, prometheus_url: str, rounds: int, series: int
) -> dict[str, Any]:
    transport = Transport(connections_per_target=8, max_response_bytes=1 << 24, idle_seconds=600)
    providers = Providers.build(
        transport,
        SecretReader(cluster),
        dql_auth_url="",
        dql_poll_interval=0,
        dql_max_polls=1,
    )
    provider = KeptnMetricsProvider.model_validate(
        {
            "apiVersion": "metrics.keptn.sh/v1",
            "kind": "KeptnMetricsProvider",
            "metadata": {"name": "prom", "namespace": "bench"},
            "spec": {"type": "prometheus", "targetServer": prometheus_url},
        }
    )
    config = ProviderConfig.from_object(provider, default_timeout=20)
    out: dict[str, Any] = {}
    try:
        for label, concurrency in (("sequential", 1), ("10 concurrent", 10)):
            timings: list[float] = []
            gate = asyncio.Semaphore(concurrency)

            async def one(
                i: int, gate: asyncio.Semaphore = gate, timings: list[float] = timings
            ) -> None:
                async with gate:
                    started = time.perf_counter()
                    query = Query(text=f'klt_bench{{i="{i % series}"}}', end=datetime.now(UTC))
                    reading = await providers.fetch(config, query)
                    item = judge(reading.text, "<1000")
                    timings.append((time.perf_counter() - started) * 1000)
                    assert item.status == "Succeeded", item

            for i in range(50):  # warm the connection pool
                await one(i)
            timings.clear()
            await asyncio.gather(*(one(i) for i in range(rounds)))
            out[label] = {
                "rounds": rounds,
                "p50_ms": _pct(timings, 50),
                "p90_ms": _pct(timings, 90),
                "p99_ms": _pct(timings, 99),
                "max_ms": round(max(timings), 2),
            }
    finally:
        await transport.close()
    return out


async def _make_definition(cluster: k8s.ClusterClient, namespace: str) -> None:
    await cluster.create(
        k8s.keptn_resource("KeptnEvaluationDefinition"),
        {
            "apiVersion": "lifecycle.keptn.sh/v1",
            "kind": "KeptnEvaluationDefinition",
            "metadata": {"name": "bench", "namespace": namespace},
            "spec": {
                "objectives": [
                    {"keptnMetricRef": {"name": "bench-1"}, "evaluationTarget": "<1000"},
                    {"keptnMetricRef": {"name": "bench-2"}, "evaluationTarget": "0..1000"},
                ]
            },
        },
    )


class Observer:
    """One consumer of ``evaluation.finished`` for the whole run, recording arrival times."""

    def __init__(self, settings: BusSettings) -> None:
        self.settings = settings
        self.arrived: dict[str, float] = {}
        self.waiters: dict[str, asyncio.Event] = {}
        self._stop = asyncio.Event()
        self._consumer = bus.Consumer(
            settings, group_id=f"bench-{uuid.uuid4().hex[:6]}", client_id="bench-observer"
        )
        self._consumer.register(events.EvaluationFinished, self._on_finished)
        self._task: asyncio.Task[None] | None = None

    async def _on_finished(
        self, envelope: events.Envelope[events.EvaluationFinished], _where: bus.Coordinates
    ) -> None:
        name = envelope.data.evaluation_name
        self.arrived[name] = time.perf_counter()
        if name in self.waiters:
            self.waiters[name].set()

    def expect(self, name: str) -> asyncio.Event:
        self.waiters[name] = asyncio.Event()
        return self.waiters[name]

    async def start(self, namespace: str) -> None:
        """Start consuming; return once a marker event made the round trip."""
        self._task = asyncio.create_task(self._consumer.run(self._stop))
        marker = self.expect("marker")
        async with bus.Publisher(self.settings, client_id="bench-marker") as publisher:
            await publisher.publish(
                events.EvaluationFinished(
                    namespace=namespace, app="bench", evaluation_name="marker", state="Succeeded"
                ),
                source="/bench",
            )
        await asyncio.wait_for(marker.wait(), 180)

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task


async def _evaluations_end_to_end(
    cluster: k8s.ClusterClient,
    observer: Observer,
    namespace: str,
    shard: str,
    n: int,
    label: str,
) -> dict[str, Any]:
    evaluation = k8s.keptn_resource("KeptnEvaluation")
    timings: list[float] = []
    creates: list[float] = []
    for i in range(n):
        name = f"{label}-{i}"
        done = observer.expect(name)
        started = time.perf_counter()
        await cluster.create(
            evaluation,
            {
                "apiVersion": "lifecycle.keptn.sh/v1",
                "kind": "KeptnEvaluation",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "labels": {SHARD_LABEL: shard},
                },
                "spec": {
                    "appName": "bench",
                    "workloadVersion": "",
                    "evaluationDefinition": "bench",
                    "retries": 1,
                },
            },
        )
        creates.append((time.perf_counter() - started) * 1000)
        try:
            await asyncio.wait_for(done.wait(), 60)
        except TimeoutError:
            state = await cluster.get(evaluation, name, namespace)
            raise RuntimeError(f"no evaluation.finished for {name}: {state}") from None
        timings.append((observer.arrived[name] - started) * 1000)
    return {
        "evaluations": n,
        "objectives_each": 2,
        "p50_ms": _pct(timings, 50),
        "p90_ms": _pct(timings, 90),
        "p99_ms": _pct(timings, 99),
        "max_ms": round(max(timings), 2),
        "of_which_the_create_request_p50_ms": _pct(creates, 50),
        "of_which_the_create_request_p99_ms": _pct(creates, 99),
    }


async def _wait_ready(port: int) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(600):
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError("the evaluator did not become ready")


async def _run(args: argparse.Namespace, info: devstack.StackInfo) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:6]
    shard, namespace, prefix = f"bench-{run_id}", f"bench-{run_id}", f"bench{run_id}."
    workdir = Path(tempfile.mkdtemp(prefix="klt-bench-"))
    exporter = Exporter(args.metrics)
    prometheus: asyncio.subprocess.Process | None = None
    evaluator: asyncio.subprocess.Process | None = None
    cluster = await k8s.ClusterClient.connect(ClusterSettings(kubeconfig=str(info.kubeconfig)))
    bus_settings = BusSettings(bootstrap_servers=info.kafka_bootstrap, topic_prefix=prefix)
    port = _free_port()
    observer: Observer | None = None
    try:
        await exporter.start()
        prometheus, prometheus_url = await _start_prometheus(exporter, workdir)
        await cluster.create(
            k8s.NAMESPACES,
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        )
        await cluster.create(
            k8s.keptn_resource("KeptnMetricsProvider"),
            {
                "apiVersion": "metrics.keptn.sh/v1",
                "kind": "KeptnMetricsProvider",
                "metadata": {"name": "prom", "namespace": namespace},
                "spec": {"type": "prometheus", "targetServer": prometheus_url},
            },
        )
        await _make_definition(cluster, namespace)
        evaluator = await _start_evaluator(info, shard, prefix, port, workdir / "evaluator.log")
        await _wait_ready(port)
        idle_memory = _memory_mib(evaluator.pid)
        await _create_metrics(cluster, namespace, shard, range(3), args.interval)
        await _wait_values(cluster, namespace, 3)
        print("evaluations end to end, idle…", file=sys.stderr, flush=True)
        observer = Observer(bus_settings)
        await observer.start(namespace)
        idle = await _evaluations_end_to_end(
            cluster, observer, namespace, shard, args.evaluations, "idle"
        )
        print("load: creating metrics and measuring…", file=sys.stderr, flush=True)
        load = await _load(
            cluster, namespace, shard, evaluator, port, args.metrics, args.interval, args.window
        )
        load["evaluator_memory_idle_mib"] = idle_memory
        print("fetch and compare…", file=sys.stderr, flush=True)
        rounds = await _fetch_and_compare(cluster, prometheus_url, args.rounds, args.metrics)
        print("evaluations end to end, under load…", file=sys.stderr, flush=True)
        loaded = await _evaluations_end_to_end(
            cluster, observer, namespace, shard, args.evaluations, "loaded"
        )
    except BaseException:
        log = workdir / "evaluator.log"
        if log.exists():
            print(log.read_text(errors="replace")[-5000:], file=sys.stderr)
        raise
    else:
        return {
            "load": load,
            "fetch_and_compare": rounds,
            "evaluation_end_to_end": {"idle": idle, "under_load": loaded},
        }
    finally:
        if observer is not None:
            await observer.stop()
        if evaluator is not None and evaluator.returncode is None:
            evaluator.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(evaluator.wait(), 30)
            except TimeoutError:
                evaluator.kill()
                await evaluator.wait()
        with contextlib.suppress(k8s.ApiError):
            await cluster.delete(k8s.NAMESPACES, namespace)
        await cluster.close()
        with contextlib.suppress(Exception):  # left behind, topics pile up in the broker
            await asyncio.wait_for(inspect.delete_prefixed_topics(bus_settings), 60)
        if prometheus is not None and prometheus.returncode is None:
            prometheus.terminate()
            await prometheus.wait()
        await exporter.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _markdown(result: dict[str, Any]) -> str:
    load, rounds, e2e = result["load"], result["fetch_and_compare"], result["evaluation_end_to_end"]
    cpu = load["cpu_percent_of_one_core"]
    idle, busy = load["evaluator_memory_idle_mib"], load["evaluator_memory_mib"]
    lines = [
        "| measure | value |",
        "|---|---|",
        f"| metrics x interval | {load['metrics']} x {load['fetch_interval_s']} s |",
        f"| fetches per second (steady state) | {load['fetches_per_s']} |",
        f"| fetch errors | {load['fetch_errors']} |",
        f"| evaluator CPU (% of one core) | {cpu.get('evaluator')} |",
        f"| kube-apiserver / etcd CPU (% of one core) | {cpu.get('apiserver')} / "
        f"{cpu.get('etcd')} |",
        f"| evaluator RSS idle → under load (peak) | {idle['VmRSS']} → {busy['VmRSS']} MiB "
        f"({busy['VmHWM']}) |",
        f"| staleness `now - lastUpdated` p50 / p99 / max | {load['staleness_s']['p50']} / "
        f"{load['staleness_s']['p99']} / {load['staleness_s']['max']} s |",
        f"| first value for all metrics after creation | {load['first_value_for_all_s']} s |",
    ]
    for label, stats in rounds.items():
        lines.append(
            f"| fetch and compare, {label}: p50 / p90 / p99 / max | {stats['p50_ms']} / "
            f"{stats['p90_ms']} / **{stats['p99_ms']}** / {stats['max_ms']} ms |"
        )
    for label, stats in e2e.items():
        lines.append(
            f"| KeptnEvaluation create → `evaluation.finished`, {label.replace('_', ' ')}: "
            f"p50 / p90 / p99 / max | {stats['p50_ms']} / {stats['p90_ms']} / "
            f"{stats['p99_ms']} / {stats['max_ms']} ms (the create request alone: p50 "
            f"{stats['of_which_the_create_request_p50_ms']}, p99 "
            f"{stats['of_which_the_create_request_p99_ms']} ms) |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--metrics", type=int, default=1000)
    parser.add_argument("--interval", type=int, default=10)
    parser.add_argument("--window", type=float, default=60.0, help="seconds of steady state")
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--evaluations", type=int, default=200)
    args = parser.parse_args()
    info = devstack.ensure_up(services=False)
    load_before = os.getloadavg()[0]
    measured = asyncio.run(_run(args, info))
    load_after = os.getloadavg()[0]
    result = {
        "benchmark": "evaluator: metric load, fetch-and-compare rounds, evaluations end to end",
        "command": " ".join(["python bench/evaluator.py", *sys.argv[1:]]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
        "python": platform.python_version(),
        "prometheus": subprocess.run(
            [_prometheus_binary(), "--version"], capture_output=True, text=True, check=False
        ).stdout.splitlines()[0],
        "stack": "Kafka 4.1.1, Kubernetes v1.34.1 (local stack)",
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "load_average_1m": {"before": round(load_before, 2), "after": round(load_after, 2)},
        **measured,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "evaluator.json").write_text(json.dumps(result, indent=2) + "\n")
    print(_markdown(result))


if __name__ == "__main__":
    main()
