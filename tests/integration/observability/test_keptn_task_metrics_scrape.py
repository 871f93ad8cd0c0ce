"""Keptn's task instruments on the task-runner's /metrics, from real tasks.

The task-runner runs in-process with a runner class of its own, so the stack's task-runner keeps
away from the test's tasks. One task's definition has no code, so the runner fails it at once
(no pod involved); another names a definition that does not exist and stays Pending. With
``KLT_LONG=1`` a third runs a busybox Job to success (that needs the node agent to run a pod).
The scrape shows each finished task counted and timed once with Keptn's labels and its final
status, and the active gauge 0 for finished tasks and 1 for the waiting one.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import pytest
from observability_kit import Samples, eventually, running, scrape, series, total

from klt_common.clients import cluster as k8s
from klt_common.configs.settings import (
    BusSettings,
    ClusterSettings,
    ObservabilitySettings,
    ShutdownSettings,
)
from klt_task_runner.app import setup
from klt_task_runner.settings import TaskRunnerSettings, TaskSettings

pytestmark = pytest.mark.timeout(150)

LONG = os.environ.get("KLT_LONG") == "1"

TASKS = k8s.keptn_resource("KeptnTask")
DEFINITIONS = k8s.keptn_resource("KeptnTaskDefinition")
LIFECYCLE = "lifecycle.keptn.sh/v1"


def _task(name: str, definition: str, runner_class: str) -> dict[str, Any]:
    return {
        "apiVersion": LIFECYCLE,
        "kind": "KeptnTask",
        "metadata": {"name": name, "labels": {"klt.dev/runner-class": runner_class}},
        "spec": {
            "taskDefinition": definition,
            "checkType": "pre",
            "context": {
                "appName": "shop",
                "appVersion": "",
                "workloadName": "shop-web",
                "workloadVersion": "1.0.0",
                "taskType": "pre",
                "objectType": "Workload",
            },
        },
    }


async def test_a_finished_task_is_counted_and_timed_and_a_waiting_one_is_active(
    cluster: k8s.ClusterClient,
    namespace: str,
    bus_settings: BusSettings,
    cluster_settings: ClusterSettings,
) -> None:
    runner_class = f"t{uuid.uuid4().hex[:10]}"
    settings = TaskRunnerSettings(
        service_name="task-runner-test",
        bus=bus_settings,
        cluster=cluster_settings,
        observability=ObservabilitySettings(http_host="127.0.0.1", http_port=0, log_json=False),
        shutdown=ShutdownSettings(grace_seconds=5),
        tasks=TaskSettings(runner_class=runner_class, pending_retry_seconds=1.0),
    )
    definitions: dict[str, dict[str, Any]] = {
        # Valid for the webhook (one runtime), unusable for the runner: no code anywhere.
        "nocode": {"deno": {}},
        "check": {
            "container": {
                "name": "main",
                "image": "busybox:1.36",
                "command": ["sh", "-c", "echo checked"],
            }
        },
    }
    for name, spec in definitions.items():
        await cluster.create(
            DEFINITIONS,
            {
                "apiVersion": LIFECYCLE,
                "kind": "KeptnTaskDefinition",
                "metadata": {"name": name},
                "spec": spec,
            },
            namespace,
        )
    outcomes = {"pre-nocode-1": "Failed", **({"pre-check-1": "Succeeded"} if LONG else {})}
    identity = {
        "keptn_deployment_app_name": "shop",
        "keptn_deployment_app_version": "",
        "keptn_deployment_workload_name": "shop-web",
        "keptn_deployment_workload_version": "1.0.0",
        "keptn_deployment_task_type": "pre",
    }
    async with running(settings, setup) as service:
        for name in outcomes:
            definition = name.removeprefix("pre-").removesuffix("-1")
            await cluster.create(TASKS, _task(name, definition, runner_class), namespace)
        await cluster.create(TASKS, _task("pre-missing-1", "missing", runner_class), namespace)

        async def finished() -> dict[str, str] | None:
            states = {
                name: str(
                    ((await cluster.get(TASKS, name, namespace)).get("status") or {}).get("status")
                )
                for name in outcomes
            }
            return states if states == outcomes else None

        await eventually(finished, timeout=90, what=f"the tasks to end {outcomes}")

        async def settled() -> Samples | None:
            samples = await scrape(service.port)
            active = {
                labels["keptn_deployment_task_name"]: value
                for labels, value in series(samples, "keptn_task_active", **identity)
            }
            expected = {**dict.fromkeys(outcomes, 0.0), "pre-missing-1": 1.0}
            return samples if active == expected else None

        samples = await eventually(settled, what="the active gauge of every task")

    for name, status in outcomes.items():
        labels = {
            **identity,
            "keptn_deployment_task_name": name,
            "keptn_deployment_task_status": status,
        }
        assert total(samples, "keptn_task_count_total", **labels) == 1, name
        assert total(samples, "keptn_task_duration_count", **labels) == 1, name
    assert total(samples, "keptn_task_count_total", keptn_deployment_task_name="pre-missing-1") == 0
    assert total(samples, "keptn_task_count_total") == len(outcomes)
