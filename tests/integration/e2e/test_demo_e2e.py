"""The README's main command, `klt demo`, with `klt events tail` following the bus beside it.

`klt demo` runs as a user runs it: a subprocess that uses the stack's five services as separate
processes, applies examples/podtato-head and follows the app version to its end. Meanwhile
`klt events tail --json --app podtato-head` runs from the current end of the topics and must
show the deployment as it happens: admissions, versions created, tasks and evaluations
requested and finished, phase changes, all for the demo's namespace.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

NAMESPACE = "podtato-kubectl"
APP = "podtato-head"


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


async def test_the_demo_completes_while_events_tail_shows_its_events() -> None:
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
