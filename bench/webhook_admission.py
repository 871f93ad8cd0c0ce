"""Webhook admission latency against request rate, over TLS, on one webhook process.

Not a test: a measurement. It sends real AdmissionReview requests for annotated pods in an
enabled namespace (the full gating path: caches, discovery, JSON patch, event queued for Kafka)
to the local stack's webhook process over HTTPS with keep-alive connections, as the apiserver
does, at fixed open-loop rates. It reports client-side p50/p99, the webhook's own histogram, and
the CPU and resident memory (VmRSS, sampled every 0.25 s) of the webhook process.

    ./klt dev up && .venv/bin/python bench/webhook_admission.py [--rates 50,100,200,400] \
        [--seconds 15]

Writes bench/results/webhook_admission.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import platform
import ssl
import subprocess
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

RESULTS = Path(__file__).resolve().parent / "results"
STATE = Path(os.environ.get("KLT_STATE_DIR", Path.home() / ".local/state/klt"))
URL = "https://127.0.0.1:18443/mutate-v1-pod"
METRICS = "http://127.0.0.1:18081/metrics"
# A namespace per run, deleted afterwards: the stack's services run the lifecycle of every
# workload a run admits, and what a run leaves behind would load the stack for later runs.
NAMESPACE = f"bench-admission-{uuid.uuid4().hex[:6]}"
# A version no earlier run used: the stack's services complete the lifecycle of what a run
# admits, and pods of a version whose pre-checks passed are (rightly) admitted without a gate,
# which would measure a different, shorter path.
RUN_VERSION = f"1.0.{uuid.uuid4().hex[:8]}"


def _review(n: int) -> dict[str, Any]:
    owner = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "name": f"web-{n % 20}",
        "uid": f"00000000-0000-0000-0000-{n % 20:012d}",
        "controller": True,
    }
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "web-",
            "annotations": {
                "keptn.sh/app": "bench",
                "keptn.sh/workload": f"web-{n % 20}",
                "keptn.sh/version": RUN_VERSION,
            },
            "ownerReferences": [owner],
        },
        "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]},
    }
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": NAMESPACE,
            "operation": "CREATE",
            "object": pod,
        },
    }


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def _rss_mib(pid: int, key: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name == key:
            return round(int(rest.split()[0]) / 1024, 1)
    return float("nan")


async def _sample_rss(pid: int, samples: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        samples.append(_rss_mib(pid))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.25)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _run_rate(session: aiohttp.ClientSession, rate: int, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    bodies = [json.dumps(_review(n)).encode() for n in range(int(rate * seconds))]

    async def one(body: bytes) -> None:
        started = time.perf_counter()
        try:
            async with session.post(
                URL, data=body, headers={"Content-Type": "application/json"}
            ) as r:
                payload = await r.json()
                answer = payload["response"]
                gated = "schedulingGates" in base64.b64decode(answer.get("patch", "")).decode()
                if r.status != 200:
                    errors[f"http {r.status}"] += 1
                elif not answer.get("allowed"):
                    errors["denied"] += 1
                elif not gated:
                    errors["allowed without a gate"] += 1
        except aiohttp.ClientError as exc:
            errors[type(exc).__name__] += 1
            return
        latencies.append((time.perf_counter() - started) * 1000)

    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks = []
    for i, body in enumerate(bodies):
        # Open loop: requests leave on schedule whether or not earlier ones were answered.
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(body)))
    await asyncio.gather(*tasks)
    elapsed = loop.time() - start
    return {
        "rate_per_s": rate,
        "sent": len(bodies),
        "achieved_per_s": round(len(bodies) / elapsed, 1),
        "errors": sum(errors.values()),
        "error_kinds": dict(errors),
        "p50_ms": round(_pct(latencies, 0.5), 2),
        "p90_ms": round(_pct(latencies, 0.9), 2),
        "p99_ms": round(_pct(latencies, 0.99), 2),
        "max_ms": round(max(latencies), 2),
    }


def _prepare_namespace() -> None:
    subprocess.run(["kubectl", "create", "namespace", NAMESPACE], capture_output=True, check=False)
    annotate = ["kubectl", "annotate", "--overwrite", "namespace", NAMESPACE]
    subprocess.run(
        [*annotate, "keptn.sh/lifecycle-toolkit=enabled"], capture_output=True, check=True
    )
    time.sleep(2)  # let the webhook's namespace cache see the annotation


async def _server_histogram(session: aiohttp.ClientSession) -> dict[float, float]:
    """Cumulative bucket counts of the webhook's own admission-latency histogram."""
    async with session.get(METRICS) as r:
        text = await r.text()
    buckets: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith("klt_webhook_admission_seconds_bucket"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[float(bound)] = float(line.rsplit(" ", 1)[1])
    return buckets


def _bucket_quantile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """The upper bound (ms) of the bucket holding quantile q of the requests in between."""
    counts = sorted((bound, after[bound] - before.get(bound, 0.0)) for bound in after)
    total = counts[-1][1]
    for bound, cumulative in counts:
        if cumulative >= q * total:
            return bound * 1000
    return float("inf")


async def _main(rates: list[int], seconds: float) -> dict[str, Any]:
    pid = int((STATE / "run" / "klt-webhook.pid").read_text().split()[0])
    tls = ssl.create_default_context()
    tls.check_hostname = False
    tls.verify_mode = ssl.CERT_NONE  # the bench measures the server; the apiserver verifies
    connector = aiohttp.TCPConnector(ssl=tls, limit=64, keepalive_timeout=60)
    results = []
    idle_rss = _rss_mib(pid)
    async with aiohttp.ClientSession(connector=connector) as session:
        await _run_rate(session, 50, 2)  # warm caches, connections and the JIT-less interpreter
        for rate in rates:
            hist_before = await _server_histogram(session)
            cpu_before, wall_before = _cpu_seconds(pid), time.monotonic()
            load_before = os.getloadavg()[0]
            samples: list[float] = []
            stop = asyncio.Event()
            sampler = asyncio.create_task(_sample_rss(pid, samples, stop))
            result = await _run_rate(session, rate, seconds)
            stop.set()
            await sampler
            cpu = _cpu_seconds(pid) - cpu_before
            hist_after = await _server_histogram(session)
            result["server_p50_ms_le"] = _bucket_quantile(hist_before, hist_after, 0.5)
            result["server_p99_ms_le"] = _bucket_quantile(hist_before, hist_after, 0.99)
            result["webhook_cpu_percent"] = round(100 * cpu / (time.monotonic() - wall_before), 1)
            result["webhook_rss_max_mib"] = max(samples)
            result["load_average_1m_before_after"] = [
                round(load_before, 2),
                round(os.getloadavg()[0], 2),
            ]
            results.append(result)
    return {
        "benchmark": "webhook pod admission over TLS, one process, open-loop rates",
        "command": f"python bench/webhook_admission.py --rates {','.join(map(str, rates))} "
        f"--seconds {seconds:g}",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
        "python": platform.python_version(),
        "note": "client and webhook share the machine's 2 cores; latency is measured at the client",
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "results": results,
        # The stack's webhook process: as found before the run, the most sampled under load, and
        # its lifetime peak (VmHWM, which may predate this run).
        "webhook_memory": {
            "idle_rss_mib": idle_rss,
            "load_rss_max_mib": max(r["webhook_rss_max_mib"] for r in results),
            "hwm_mib": _rss_mib(pid, "VmHWM"),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rates", default="50,100,200,400")
    parser.add_argument("--seconds", type=float, default=15)
    args = parser.parse_args()
    _prepare_namespace()
    try:
        result = asyncio.run(_main([int(r) for r in args.rates.split(",")], args.seconds))
    finally:
        subprocess.run(
            ["kubectl", "delete", "namespace", NAMESPACE, "--wait=false"],
            capture_output=True,
            check=False,
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "webhook_admission.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        "| rate (req/s) | errors | client p50 ms | client p99 ms | server p50 ms | "
        "server p99 ms | webhook CPU |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in result["results"]:
        print(
            f"| {r['rate_per_s']} | {r['errors']} | {r['p50_ms']} | {r['p99_ms']} | "
            f"≤ {r['server_p50_ms_le']:g} | ≤ {r['server_p99_ms_le']:g} | "
            f"{r['webhook_cpu_percent']}% |"
        )


if __name__ == "__main__":
    main()
