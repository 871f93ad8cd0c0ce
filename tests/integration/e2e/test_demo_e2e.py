"""The README's main command, `klt demo`, with `klt events tail` following the bus beside it.

After the demo, the value of the example's Secret (the post-deployment task's
``secureParameters``) is looked for wherever it must not be: the logs of the stack and its
services, the namespace's Events, every object in the namespace but the Secret itself, and the
demo's events on the bus.

`klt demo` runs as a user runs it: a subprocess that uses the stack's five services as separate
processes, applies examples/podtato-head and follows the app version to its end. Meanwhile
`klt events tail --json --app podtato-head` runs from the current end of the topics and must
show the deployment as it happens: admissions, versions created, tasks and evaluations
requested and finished, phase changes, all for the demo's namespace.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from klt_common.clients import cluster as k8s

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

NAMESPACE = "podtato-kubectl"
APP = "podtato-head"
EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "podtato-head"
STATE = Path(os.environ.get("KLT_STATE_DIR", Path.home() / ".local/state/klt"))
# Namespaced kinds a lifecycle writes or reads, besides the Secrets themselves.
SCANNED = [
    k8s.PODS,
    k8s.CONFIGMAPS,
    k8s.EVENTS,
    k8s.JOBS,
    *(
        k8s.keptn_resource(kind)
        for kind in (
            "KeptnApp",
            "KeptnAppVersion",
            "KeptnAppContext",
            "KeptnWorkload",
            "KeptnWorkloadVersion",
            "KeptnTaskDefinition",
            "KeptnTask",
            "KeptnEvaluationDefinition",
            "KeptnEvaluation",
            "KeptnMetric",
            "KeptnMetricsProvider",
        )
    ),
]


def _secret_values() -> list[str]:
    """Every value of every Secret in the example, as written and base64-encoded."""
    values: list[str] = []
    for manifest in sorted(EXAMPLE.glob("*.yaml")):
        for doc in yaml.safe_load_all(manifest.read_text()):
            if doc and doc.get("kind") == "Secret":
                for value in (doc.get("stringData") or {}).values():
                    values += [str(value), base64.b64encode(str(value).encode()).decode()]
    assert values, "the example has a Secret to look for"
    return values


async def _leaks(cluster: k8s.ClusterClient, bus: list[dict[str, Any]]) -> list[str]:
    found: list[str] = []
    needles = _secret_values()
    for log in sorted((STATE / "logs").glob("*.log")):
        text = log.read_text(errors="replace")
        found += [f"log {log.name}" for n in needles if n in text]
    for res in SCANNED:
        for obj in (await cluster.list(res, NAMESPACE)).items:
            text = json.dumps(obj)
            name = f"{res.kind} {obj['metadata']['name']}"
            found += [name for n in needles if n in text]
    text = json.dumps(bus)
    found += ["the bus" for n in needles if n in text]
    return found


async def _cli(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "klt_cli.main",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NO_COLOR": "1"},
    )


async def _collect(stream: asyncio.StreamReader, into: list[dict[str, Any]]) -> None:
    while line := await stream.readline():
        into.append(json.loads(line))


async def test_the_demo_completes_while_events_tail_shows_its_events(
    cluster: k8s.ClusterClient,
) -> None:
    tail = await _cli("events", "tail", "--json", "--app", APP)
    assert tail.stdout is not None
    assert tail.stderr is not None
    ready = await asyncio.wait_for(tail.stderr.readline(), 60)
    assert ready.startswith(b"klt: following"), ready
    seen: list[dict[str, Any]] = []
    reader = asyncio.create_task(_collect(tail.stdout, seen))
    try:
        demo = await _cli("demo")
        out, err = await asyncio.wait_for(demo.communicate(), 800)
        text = out.decode()
        assert demo.returncode == 0, f"{text}\n{err.decode()}"
        assert "ended Succeeded" in text
        # The timeline lists the app's phases, promotion included (the stack enables it).
        for phase in ("AppPreDeployTasks", "AppDeploy", "AppPostDeployEvaluations", "Promotion"):
            assert phase in text, phase

        wanted = {
            "sh.klt.pod.admitted",
            "sh.klt.workloadversion.created",
            "sh.klt.appversion.created",
            "sh.klt.task.requested",
            "sh.klt.task.finished",
            "sh.klt.evaluation.requested",
            "sh.klt.evaluation.finished",
            "sh.klt.phase.changed",
        }
        for _ in range(100):
            if wanted <= {e["type"] for e in seen}:
                break
            await asyncio.sleep(0.1)
    finally:
        tail.terminate()
        await tail.wait()
        await reader
    assert wanted <= {e["type"] for e in seen}, sorted({e["type"] for e in seen})
    assert all(e["data"]["namespace"] == NAMESPACE for e in seen)
    assert all(e["data"]["app"] == APP for e in seen)
    completed = [
        e
        for e in seen
        if e["type"] == "sh.klt.phase.changed"
        and e["data"]["object_kind"] == "KeptnAppVersion"
        and e["data"]["state"] == "Succeeded"
    ]
    assert completed, "the app version's success went over the bus"
    # Admission comes before the app version and its trace; everything after is in a trace.
    untraced = {e["type"] for e in seen if not e["kafka"]["traceId"]}
    assert untraced <= {"sh.klt.pod.admitted"}, untraced
    leaks = await _leaks(cluster, seen)
    assert not leaks, f"the example's secret value appears in: {sorted(set(leaks))}"
