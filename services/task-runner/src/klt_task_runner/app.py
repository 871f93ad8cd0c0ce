"""Wiring of the task-runner service: what it registers on the service template.

- a ``klt-task-runner`` consumer-group member for ``sh.klt.task.requested`` (topic
  ``klt.tasks``);
- watch caches of the KeptnTasks it owns (by ``tasks.runner_class``), of their Jobs and pods
  (label-selected by ``klt.dev/task-uid``), of all KeptnTaskDefinitions and of the code
  ConfigMaps it writes;
- the task and definition work queues, the pending-task timer and the owner of background log
  captures, each a supervised root task;
- Keptn's task instruments (``keptn_task_*``, see ``meters``) on the service's registry;
- the job executor (Keptn's job-executor-service mode), when its package is installed.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect

from klt_common.clients import bus
from klt_common.service import ServiceContext
from klt_common.structs import events
from klt_task_runner.meters import TaskMeters
from klt_task_runner.runner import TaskRunner
from klt_task_runner.settings import TaskRunnerSettings

_JOB_EXECUTOR = "klt_task_runner.jobexecutor"


async def setup(context: ServiceContext[TaskRunnerSettings]) -> None:
    settings = context.settings
    runner = TaskRunner(
        context.cluster,
        context.publisher,
        settings.tasks,
        klt_namespace=settings.cluster.namespace,
        source=context.source,
        instance=context.instance,
        meters=TaskMeters(context.registry),
    )
    for cache in runner.caches():
        context.watch(cache)
    context.loop("index:keptntasks", lambda: runner.tasks.run(context.stop))
    context.loop("index:jobs", lambda: runner.jobs.run(context.stop))
    context.loop("index:pods", lambda: runner.pods.run(context.stop))
    context.loop("queue:tasks", lambda: runner.queue.run(context.stop))
    context.loop("queue:definitions", lambda: runner.definition_queue.run(context.stop))
    context.loop("definitions", lambda: runner.run_definitions(context.stop))
    context.loop("pending-timer", lambda: runner.run_pending_timer(context.stop))
    context.loop("background", lambda: runner.run_background(context.stop))
    context.readiness.add("task-indexes", lambda: runner.ready)

    async def on_task_requested(
        envelope: events.Envelope[events.TaskRequested], _where: bus.Coordinates
    ) -> None:
        await runner.on_task_requested(envelope)

    consumer = context.consumer(settings.tasks.consumer_group)
    consumer.register(events.TaskRequested, on_task_requested)

    if importlib.util.find_spec(_JOB_EXECUTOR) is not None:
        jobexecutor = importlib.import_module(_JOB_EXECUTOR)
        attached = jobexecutor.attach(context)
        if inspect.isawaitable(attached):
            await attached
