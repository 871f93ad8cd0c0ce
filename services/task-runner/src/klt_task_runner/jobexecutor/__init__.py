"""The job executor: Keptn's job-executor-service (JES), as a mode of the task-runner.

Keptn CloudEvents arrive on a Kafka topic; a ConfigMap labelled for the event's project, stage
or service holds a JES job configuration (``apiVersion: v2``); each matching action's tasks run
as Kubernetes Jobs, one after another; ``.started`` and ``.finished`` go back on a Kafka topic.
docs/job-executor.md is the user's guide, docs/compatibility.md lists where it differs from JES.

Modules, from the wire inwards:

- ``cloudevents``: Keptn's CloudEvents in (structured or binary mode) and out; no I/O;
- ``config``: the configuration schema and its strict parser; no I/O;
- ``matching``: which actions an event triggers, and JSONPath lookups; no I/O;
- ``envs``, ``images``, ``jobspec``: environment, image allow-list, Job and ConfigMap bodies;
  no I/O;
- ``lookup``: finds the configuration ConfigMap (apiserver);
- ``execution``: creates or adopts Jobs, watches them, reads their logs (apiserver);
- ``handler``: one event from record to ``.finished`` (apiserver and Kafka);
- ``settings``: ``JobExecutorSettings``, on ``TaskRunnerSettings.job_executor``.

It shares nothing with the KeptnTask side of the task-runner but the process and its clients.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from klt_common.clients import bus, raw_bus
from klt_task_runner.jobexecutor import handler, images

if TYPE_CHECKING:
    from klt_common.service import ServiceContext
    from klt_task_runner.settings import TaskRunnerSettings

__all__ = ["attach"]

_log = logging.getLogger(__name__)


def attach(context: ServiceContext[TaskRunnerSettings]) -> None:
    """Register the job executor's consumer on the service, if the mode is enabled.

    The consumer runs as the root task ``job-executor``: it creates its input and output topics
    (idempotently), then consumes until the service stops. The service is not ready before the
    topics exist.
    """
    settings = context.settings.job_executor
    if not settings.enabled:
        return
    allow = images.AllowList.compile(settings.allowed_images)  # fails start-up on a bad glob
    if allow.allows_everything:
        _log.warning("job executor: no image allow-list is configured; every image may run")
    bus_settings = context.settings.bus
    executor = handler.JobExecutor(
        settings, context.cluster, raw_bus.RawPublisher(context.publisher, bus_settings)
    )
    consumer = raw_bus.RawConsumer(
        bus_settings,
        group_id=settings.consumer_group,
        client_id=f"{context.instance}-job-executor",
        topics=[settings.input_topic],
        handler=executor.handle,
        metrics=context.bus_metrics,
    )
    topics_ready = False

    async def run() -> None:
        nonlocal topics_ready
        await bus.ensure_topics(
            bus_settings, {settings.input_topic, settings.output_topic}, stop=context.stop
        )
        topics_ready = True
        await consumer.run(context.stop)

    context.loop("job-executor", run)
    context.readiness.add("job-executor", lambda: topics_ready)
