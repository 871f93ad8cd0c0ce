"""Operator commands: ``klt status``, ``klt events tail``, ``klt topics`` and ``klt trace``.

They read the cluster (through the kubeconfig in ``KUBECONFIG``) and the bus (``--bootstrap``,
default ``KLT_KAFKA_BOOTSTRAP``) and change nothing. Colour is used only on a terminal.
Exit codes: 0 success, 1 the command could not do its job (unreachable cluster or broker,
object not found), 2 bad usage (argparse).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import fnmatch
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from klt_common.clients import cluster as k8s
from klt_common.clients import inspect
from klt_common.configs.settings import BusSettings, ClusterSettings
from klt_common.structs import events

APP_VERSIONS = k8s.keptn_resource("KeptnAppVersion")
WORKLOAD_VERSIONS = k8s.keptn_resource("KeptnWorkloadVersion")

_COLOURS = {
    "Succeeded": "32",
    "Completed": "32",
    "Failed": "31",
    "Warning": "33",
    "Progressing": "36",
    "Deprecated": "90",
}


class _Out:
    def __init__(self, stream: TextIO = sys.stdout) -> None:
        self.stream = stream
        self.colour = stream.isatty() and os.environ.get("NO_COLOR") is None

    def paint(self, text: str, key: str | None = None) -> str:
        code = _COLOURS.get(key or text)
        return f"\x1b[{code}m{text}\x1b[0m" if self.colour and code else text

    def write(self, text: str = "") -> None:
        self.stream.write(text + "\n")
        self.stream.flush()


def _bus(args: argparse.Namespace) -> BusSettings:
    return BusSettings(
        bootstrap_servers=args.bootstrap or os.environ.get("KLT_KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
        topic_prefix=args.prefix,
        request_timeout_ms=10_000,
    )


async def _cluster() -> k8s.ClusterClient:
    return await k8s.ClusterClient.connect(
        ClusterSettings(kubeconfig=os.environ.get("KUBECONFIG") or None, retry_delays=(0.2, 0.5))
    )


def _age(timestamp: str | None) -> str:
    if not timestamp:
        return "-"
    try:
        then = dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return "-"
    seconds = int((dt.datetime.now(dt.UTC) - then).total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


def _table(out: _Out, header: Sequence[str], rows: list[list[str]], states: int | None) -> None:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    out.write("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        cells = [cell.ljust(w) for cell, w in zip(row, widths, strict=True)]
        if states is not None:
            cells[states] = out.paint(cells[states], row[states])
        out.write("  ".join(cells).rstrip())


def _status_rows(
    kavs: list[dict[str, Any]], kwvs: list[dict[str, Any]]
) -> tuple[list[list[str]], list[list[str]]]:
    apps = []
    for kav in sorted(kavs, key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"])):
        spec, status = kav.get("spec", {}), kav.get("status") or {}
        apps.append(
            [
                kav["metadata"]["namespace"],
                spec.get("appName", ""),
                spec.get("version", ""),
                status.get("currentPhase") or "-",
                status.get("status") or "Pending",
                _age(kav["metadata"].get("creationTimestamp")),
            ]
        )
    workloads = []
    for kwv in sorted(kwvs, key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"])):
        spec, status = kwv.get("spec", {}), kwv.get("status") or {}
        workloads.append(
            [
                kwv["metadata"]["namespace"],
                spec.get("app", ""),
                spec.get("workloadName", ""),
                spec.get("version", ""),
                status.get("currentPhase") or "-",
                status.get("status") or "Pending",
                _age(kwv["metadata"].get("creationTimestamp")),
            ]
        )
    return apps, workloads


def _print_status(out: _Out, kavs: list[dict[str, Any]], kwvs: list[dict[str, Any]]) -> None:
    apps, workloads = _status_rows(kavs, kwvs)
    _table(out, ["NAMESPACE", "APP", "VERSION", "PHASE", "STATUS", "AGE"], apps, 4)
    out.write()
    _table(out, ["NAMESPACE", "APP", "WORKLOAD", "VERSION", "PHASE", "STATUS", "AGE"], workloads, 5)


async def _status(args: argparse.Namespace) -> int:
    out = _Out()
    client = await _cluster()
    try:
        if not args.watch:
            kavs = (await client.list(APP_VERSIONS, args.namespace)).items
            kwvs = (await client.list(WORKLOAD_VERSIONS, args.namespace)).items
            _print_status(out, kavs, kwvs)
            return 0
        stop = asyncio.Event()
        caches = [
            k8s.WatchCache(client, APP_VERSIONS, namespace=args.namespace),
            k8s.WatchCache(client, WORKLOAD_VERSIONS, namespace=args.namespace),
        ]
        queues = [c.subscribe() for c in caches]
        runners = [asyncio.create_task(c.run(stop)) for c in caches]
        try:
            for cache in caches:
                await cache.wait_synced(30)
            while True:
                if out.colour:
                    out.stream.write("\x1b[H\x1b[2J")
                else:
                    out.write(f"--- {dt.datetime.now(dt.UTC).strftime('%H:%M:%S')}")
                _print_status(out, caches[0].values(), caches[1].values())
                getters = [asyncio.ensure_future(q.get()) for q in queues]
                await asyncio.wait(getters, return_when=asyncio.FIRST_COMPLETED)
                for g in getters:
                    g.cancel()
                await asyncio.sleep(0.2)  # coalesce a burst of changes into one redraw
                for q in queues:
                    while not q.empty():
                        q.get_nowait()
        finally:
            stop.set()
            await asyncio.gather(*runners, return_exceptions=True)
    finally:
        await client.close()


def _trace_id(headers: list[tuple[str, bytes]]) -> str:
    for key, value in headers:
        if key == "traceparent":
            parts = value.decode(errors="replace").split("-")
            return parts[1] if len(parts) > 2 else ""
    return ""


def _matches(args: argparse.Namespace, envelope: events.Envelope[Any], trace: str) -> bool:
    data = envelope.data
    if args.type and not fnmatch.fnmatch(envelope.type, args.type):
        return False
    if args.app and getattr(data, "app", None) != args.app:
        return False
    if args.workload and getattr(data, "workload", None) != args.workload:
        return False
    return not (args.trace and trace != args.trace)


async def _tail(args: argparse.Namespace) -> int:
    out = _Out()
    settings = _bus(args)
    topics = [t.full_name(settings.topic_prefix) for t in events.Topic]
    shown = 0

    def ready(partitions: int) -> None:
        # On stderr, so scripts reading the events from stdout are not disturbed.
        where = "from the beginning" if args.from_beginning else "from now on"
        print(f"klt: following {partitions} partitions {where}", file=sys.stderr, flush=True)

    records = inspect.tail(settings, topics, from_beginning=args.from_beginning, on_ready=ready)
    async with contextlib.aclosing(records):
        async for record in records:
            if _show(out, args, record):
                shown += 1
            if args.max and shown >= args.max:
                break
    return 0


def _show(out: _Out, args: argparse.Namespace, record: inspect.Record) -> bool:
    """Print one record if it passes the filters; True when printed."""
    trace = _trace_id(record.headers)
    try:
        envelope = events.decode(record.value, record.headers)
    except events.EventDecodeError as exc:
        if args.type or args.app or args.workload or args.trace:
            return False
        out.write(f"{record.topic}[{record.partition}]@{record.offset}: undecodable: {exc}")
        return True
    if not _matches(args, envelope, trace):
        return False
    if args.json:
        body = envelope.model_dump(mode="json")
        body["kafka"] = {
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "traceId": trace,
        }
        out.write(json.dumps(body))
        return True
    data = envelope.data.model_dump(mode="json", exclude={"schema_version", "namespace", "app"})
    fields = " ".join(f"{k}={v}" for k, v in data.items() if v not in (None, "", [], {}))
    when = envelope.time.strftime("%H:%M:%S.%f")[:-3]
    out.write(
        f"{when} {out.paint(envelope.type.removeprefix('sh.klt.'), 'Progressing')} "
        f"{envelope.data.namespace}/{envelope.data.app} {fields}"
    )
    return True


async def _topics(args: argparse.Namespace) -> int:
    out = _Out()
    settings = _bus(args)
    names = None if args.all else [t.full_name(settings.topic_prefix) for t in events.Topic]
    topic_infos, groups = await inspect.describe(settings, names)
    _table(
        out,
        ["TOPIC", "PARTITIONS", "MESSAGES"],
        [[t.name, str(t.partitions), str(t.messages)] for t in topic_infos],
        None,
    )
    out.write()
    rows = []
    for g in groups:
        by_topic: dict[str, int] = {}
        for p in g.partitions:
            by_topic[p.topic] = by_topic.get(p.topic, 0) + p.lag
        for topic, lag in sorted(by_topic.items()):
            rows.append([g.group, g.state, str(g.members), topic, str(lag)])
    _table(out, ["GROUP", "STATE", "MEMBERS", "TOPIC", "LAG"], rows, None)
    return 0


async def _trace(args: argparse.Namespace) -> int:
    client = await _cluster()
    try:
        return await show_trace(_Out(), client, args.app_version, args.namespace)
    finally:
        await client.close()


async def show_trace(out: _Out, client: k8s.ClusterClient, app_version: str, namespace: str) -> int:
    """Print the timeline of one KeptnAppVersion and its workloads; 1 when it does not exist."""
    kav = await client.get_or_none(APP_VERSIONS, app_version, namespace)
    if kav is None:
        out.write(f"klt trace: KeptnAppVersion {namespace}/{app_version} not found")
        return 1
    app = kav["spec"].get("appName", "")
    kwvs = [
        w
        for w in (await client.list(WORKLOAD_VERSIONS, namespace)).items
        if w.get("spec", {}).get("app") == app
    ]
    names = {app_version, *(w["metadata"]["name"] for w in kwvs)}
    recorded = (await client.list(k8s.EVENTS, namespace)).items
    lines: list[tuple[str, str, str, str]] = []
    for event in recorded:
        involved = event.get("involvedObject", {})
        if involved.get("name") not in names:
            continue
        when = event.get("eventTime") or event.get("firstTimestamp") or ""
        lines.append(
            (when, involved.get("name", ""), event.get("reason", ""), event.get("message", ""))
        )
    for obj in [kav, *kwvs]:
        status = obj.get("status") or {}
        for key, value in status.items():
            if not (key.endswith(("TaskStatus", "EvaluationStatus")) and isinstance(value, list)):
                continue
            for item in value:
                if isinstance(item, dict):
                    for stamp, what in (
                        ("startTime", "started"),
                        ("endTime", item.get("status", "")),
                    ):
                        if item.get(stamp):
                            lines.append(
                                (
                                    item[stamp],
                                    obj["metadata"]["name"],
                                    f"{item.get('definitionName', '')} {what}",
                                    item.get("name", ""),
                                )
                            )
    status = kav.get("status") or {}
    out.write(
        f"{namespace}/{app_version}: {status.get('status', 'Pending')} "
        f"(phase {status.get('currentPhase') or '-'})"
    )
    start = min((line[0] for line in lines if line[0]), default="")
    for when, name, reason, message in sorted(lines):
        offset = ""
        with contextlib.suppress(ValueError):
            t0 = dt.datetime.fromisoformat(start.replace("Z", "+00:00"))
            t1 = dt.datetime.fromisoformat(when.replace("Z", "+00:00"))
            offset = f"+{(t1 - t0).total_seconds():7.2f}s"
        state = next(
            (s for s in _COLOURS if reason.endswith(s) or reason.endswith(s.lower())), None
        )
        out.write(f"{offset:>10} {name:<40} {out.paint(reason, state)} {message}")
    return 0


def _run(coro_fn: Any) -> Any:
    def runner(args: argparse.Namespace) -> int:
        # The client libraries log every failed connection attempt; the CLI reports the
        # outcome once, itself.
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
        for noisy in ("aiokafka", "kafka", "kubernetes_asyncio", "klt_common"):
            logging.getLogger(noisy).setLevel(logging.CRITICAL)
        try:
            result: int = asyncio.run(coro_fn(args))
        except KeyboardInterrupt:
            return 130
        except Exception as exc:  # noqa: BLE001 - a CLI reports, it does not dump a traceback
            print(f"klt: error: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        return result

    return runner


def add_commands(top: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the operator commands on the top-level parser."""

    def bus_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--bootstrap", help="Kafka bootstrap (default $KLT_KAFKA_BOOTSTRAP)")
        p.add_argument("--prefix", default="", help="topic prefix of the installation")

    p = top.add_parser("status", help="apps, versions, workloads and phases")
    p.add_argument("-n", "--namespace", help="one namespace (default: all)")
    p.add_argument("-w", "--watch", action="store_true", help="keep the table live")
    p.set_defaults(func=_run(_status))

    events_parser = top.add_parser("events", help="the events on the bus")
    sub = events_parser.add_subparsers(dest="events_command", required=True)
    p = sub.add_parser("tail", help="decode and print bus events as they arrive")
    bus_flags(p)
    p.add_argument("--type", help="event type glob, e.g. 'sh.klt.task.*'")
    p.add_argument("--app")
    p.add_argument("--workload")
    p.add_argument("--trace", help="W3C trace id")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--from-beginning", action="store_true", help="replay what the topics hold")
    p.add_argument("--max", type=int, default=0, help="stop after this many events")
    p.set_defaults(func=_run(_tail))

    p = top.add_parser("topics", help="topics, partitions, consumer groups and lag")
    bus_flags(p)
    p.add_argument(
        "--all", action="store_true", help="every topic under the prefix, not only klt's"
    )
    p.set_defaults(func=_run(_topics))

    p = top.add_parser("trace", help="the phase timeline of one app version")
    p.add_argument("app_version", help="KeptnAppVersion name")
    p.add_argument("-n", "--namespace", default="default")
    p.set_defaults(func=_run(_trace))
