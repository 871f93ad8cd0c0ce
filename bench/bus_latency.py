"""Bus end-to-end latency: from event creation (publish) to the start of its handler.

Not a test: a measurement on the local stack's real broker. The consumer runs in its own
process, as a service would, and records ``now - envelope.time`` when each handler starts.
Three publishing modes: paced (~400/s, latency without queueing), sequential (each publish waits
for acks=all before the next) and burst (50 concurrent publishers).

    ./klt dev up --no-services && .venv/bin/python bench/bus_latency.py [--events 2000]

Writes bench/results/bus_latency.json and prints a Markdown table for docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from klt_common.clients import bus
from klt_common.configs.settings import BusSettings
from klt_common.structs import events

RESULTS = Path(__file__).resolve().parent / "results"


def _settings(bootstrap: str, prefix: str) -> BusSettings:
    return BusSettings(bootstrap_servers=bootstrap, topic_prefix=prefix, partitions=6)


async def _consume(bootstrap: str, prefix: str, expect: int, out: Path) -> None:
    latencies: list[float] = []
    done = asyncio.Event()

    async def handle(envelope: events.Envelope[events.TaskRequested], _: bus.Coordinates) -> None:
        latencies.append((datetime.now(UTC) - envelope.time).total_seconds() * 1000)
        if len(latencies) >= expect:
            done.set()

    consumer = bus.Consumer(_settings(bootstrap, prefix), group_id=f"g-{prefix}", client_id="bench")
    consumer.register(events.TaskRequested, handle)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    print("ready", flush=True)  # the parent starts publishing once it reads this
    await done.wait()
    stop.set()
    await task
    await asyncio.to_thread(out.write_text, json.dumps(latencies))


async def _publish(bootstrap: str, prefix: str, mode: str, n: int) -> float:
    async with bus.Publisher(_settings(bootstrap, prefix), client_id="bench-pub") as publisher:

        async def one(i: int) -> None:
            payload = events.TaskRequested(
                namespace="shop", app=f"app-{i % 50}", task_name=f"t-{i}", phase="bench"
            )
            await publisher.publish(payload, source="/bench")

        started = time.perf_counter()
        if mode == "paced":
            for i in range(n):
                await one(i)
                await asyncio.sleep(0.0025)
        elif mode == "sequential":
            for i in range(n):
                await one(i)
        else:
            gate = asyncio.Semaphore(50)

            async def gated(i: int) -> None:
                async with gate:
                    await one(i)

            await asyncio.gather(*(gated(i) for i in range(n)))
        return time.perf_counter() - started


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _run(bootstrap: str, n: int) -> dict[str, object]:
    modes: dict[str, dict[str, float]] = {}
    workdir = Path(tempfile.mkdtemp(prefix="klt-bench-"))
    for mode in ("paced", "sequential", "burst"):
        prefix = f"bench{uuid.uuid4().hex[:8]}."
        await bus.ensure_topics(_settings(bootstrap, prefix), [events.Topic.TASKS])
        out = workdir / f"{mode}.json"
        consumer = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--consume",
            bootstrap,
            prefix,
            str(n),
            str(out),
            stdout=asyncio.subprocess.PIPE,
        )
        assert consumer.stdout is not None
        await consumer.stdout.readline()
        await asyncio.sleep(3)  # let the group form and partitions be assigned
        seconds = await _publish(bootstrap, prefix, mode, n)
        await consumer.wait()
        latencies = json.loads(await asyncio.to_thread(out.read_text))
        modes[mode] = {
            "events": len(latencies),
            "publish_rate_per_s": round(n / seconds),
            "p50_ms": round(_pct(latencies, 0.50), 2),
            "p90_ms": round(_pct(latencies, 0.90), 2),
            "p99_ms": round(_pct(latencies, 0.99), 2),
            "max_ms": round(max(latencies), 2),
        }
    return {
        "benchmark": "bus end-to-end latency (publish to handler start)",
        "command": f"python bench/bus_latency.py --events {n}",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
        "python": platform.python_version(),
        "kafka": "4.1.1 (local stack, single broker, loopback)",
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "modes": modes,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument(
        "--bootstrap", default=os.environ.get("KLT_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    )
    parser.add_argument("--consume", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.consume:
        bootstrap, prefix, expect, out = args.consume
        asyncio.run(_consume(bootstrap, prefix, int(expect), Path(out)))
        return
    result = asyncio.run(_run(args.bootstrap, args.events))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bus_latency.json").write_text(json.dumps(result, indent=2) + "\n")
    print("| mode | rate (events/s) | p50 ms | p90 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|---|")
    for mode, r in result["modes"].items():  # type: ignore[attr-defined]
        print(
            f"| {mode} | {r['publish_rate_per_s']} | {r['p50_ms']} | {r['p90_ms']} | "
            f"{r['p99_ms']} | {r['max_ms']} |"
        )


if __name__ == "__main__":
    main()
