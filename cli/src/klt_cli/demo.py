"""``klt demo``: the podtato-head example from a clean namespace to Completed, watched live.

It brings up the local stack with the five services as separate processes, applies
examples/podtato-head, follows the KeptnAppVersion and KeptnWorkloadVersions through their
phases (from watch caches, so every transition is shown as it happens), and ends with the
timeline of the app version. Exit code 0 when the app version Completed with status
Succeeded, 1 when it failed or did not finish in time.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path
from typing import Any

from klt_cli import ops
from klt_cli.devstack import paths
from klt_cli.devstack import stack as devstack
from klt_cli.devstack.proc import StackError
from klt_common.clients import cluster as k8s
from klt_common.configs.settings import ClusterSettings

NAMESPACE = "podtato-kubectl"
APP = "podtato-head"


def _kubectl(info: devstack.StackInfo, *args: str, check: bool = True) -> str:
    result = subprocess.run(
        ["kubectl", *args], env=info.env(), capture_output=True, text=True, check=False, timeout=300
    )
    if check and result.returncode != 0:
        raise StackError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def _state_line(obj: dict[str, Any]) -> str:
    status = obj.get("status") or {}
    return f"{status.get('currentPhase') or '-'} / {status.get('status') or 'Pending'}"


async def _follow(info: devstack.StackInfo, timeout: float, out: ops._Out) -> dict[str, Any] | None:
    client = await k8s.ClusterClient.connect(ClusterSettings(kubeconfig=str(info.kubeconfig)))
    stop = asyncio.Event()
    caches = [
        k8s.WatchCache(client, ops.APP_VERSIONS, namespace=NAMESPACE),
        k8s.WatchCache(client, ops.WORKLOAD_VERSIONS, namespace=NAMESPACE),
    ]
    queues = [c.subscribe() for c in caches]
    runners = [asyncio.create_task(c.run(stop)) for c in caches]
    started = time.monotonic()
    seen: dict[str, str] = {}
    try:
        for cache in caches:
            await cache.wait_synced(30)
        while time.monotonic() - started < timeout:
            for obj in [*caches[0].values(), *caches[1].values()]:
                name = f"{obj['kind'].removeprefix('Keptn')} {obj['metadata']['name']}"
                line = _state_line(obj)
                if seen.get(name) != line:
                    seen[name] = line
                    state = (obj.get("status") or {}).get("status") or "Pending"
                    out.write(
                        f"{time.monotonic() - started:7.1f}s  {name:<55} {out.paint(line, state)}"
                    )
            for kav in caches[0].values():
                status = kav.get("status") or {}
                if status.get("currentPhase") == "Completed" or status.get("status") in (
                    "Failed",
                    "Deprecated",
                ):
                    return kav
            getters = [asyncio.ensure_future(q.get()) for q in queues]
            await asyncio.wait(getters, timeout=5, return_when=asyncio.FIRST_COMPLETED)
            for g in getters:
                g.cancel()
        return None
    finally:
        stop.set()
        await asyncio.gather(*runners, return_exceptions=True)
        await client.close()


async def _trace(info: devstack.StackInfo, name: str, out: ops._Out) -> None:
    client = await k8s.ClusterClient.connect(ClusterSettings(kubeconfig=str(info.kubeconfig)))
    try:
        await ops.show_trace(out, client, name, NAMESPACE)
    finally:
        await client.close()


def run(*, timeout: float = 600.0, keep: bool = False) -> int:
    out = ops._Out()
    root = paths.repo_root()
    if root is None:
        raise StackError("klt demo runs from a klt checkout (set KLT_REPO_ROOT)")
    info = devstack.ensure_up(services=True)
    example = root / "examples" / "podtato-head"
    if not keep:
        out.write(f"klt demo: starting from a clean namespace {NAMESPACE}")
        _kubectl(
            info,
            "delete",
            "namespace",
            NAMESPACE,
            "--ignore-not-found",
            "--wait=true",
            "--timeout=120s",
        )
    out.write(f"klt demo: applying {Path(example).relative_to(root)}")
    _kubectl(info, "apply", "-f", str(example))
    out.write("klt demo: following the lifecycle (Ctrl-C to stop watching)")
    kav = asyncio.run(_follow(info, timeout, out))
    if kav is None:
        out.write(f"klt demo: the app did not finish within {timeout:.0f}s")
        out.write(f"klt demo: see `klt status -n {NAMESPACE}` and the logs in `klt dev status`")
        return 1
    out.write()
    name = kav["metadata"]["name"]
    asyncio.run(_trace(info, name, out))
    status = (kav.get("status") or {}).get("status")
    out.write()
    out.write(f"klt demo: {name} ended {out.paint(str(status), str(status))}")
    return 0 if status == "Succeeded" else 1
