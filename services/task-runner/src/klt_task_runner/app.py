"""Wiring of the task-runner service: what it registers on the service template.

The task-runner's handlers arrive with issue 4; until then the process runs the shared template
(probes, cluster client, bus publisher, staged shutdown) and registers no handler, so that it
can already be deployed, scaled and probed like the finished service.
"""

from __future__ import annotations

from klt_common.service import ServiceContext
from klt_task_runner.settings import TaskRunnerSettings


async def setup(context: ServiceContext[TaskRunnerSettings]) -> None:
    context.readiness.add("started", lambda: True)
