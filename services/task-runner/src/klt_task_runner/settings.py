"""Settings of the task-runner service (``KLT_TASKS__*`` for the task group)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from klt_common.configs.settings import ServiceSettings
from klt_task_runner.jobexecutor.settings import JobExecutorSettings


class TaskSettings(BaseModel):
    """How KeptnTasks become Jobs, and how the runner schedules its own work."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    deno_image: str = "ghcr.io/klt-dev/deno-runtime:v0.1.0"
    """Image of the deno function runner (Keptn's FUNCTION_RUNNER_IMAGE). Its name must contain
    ``deno-runtime`` for the dev stack's node agent to run it."""

    python_image: str = "ghcr.io/klt-dev/python-runtime:v0.1.0"
    """Image of the python function runner (Keptn's PYTHON_RUNNER_IMAGE). Its name must contain
    ``python-runtime`` for the dev stack's node agent to run it."""

    runner_class: str = ""
    """Which KeptnTasks this installation runs: those labelled ``klt.dev/runner-class`` with this
    value, or, when empty (the default), those without the label. Lets several installations,
    or tests, share one cluster the way ``bus.topic_prefix`` lets them share a broker."""

    consumer_group: str = "klt-task-runner"
    """Kafka consumer group of the ``klt.tasks`` handler; replicas share its partitions."""

    workers: int = 64
    """Tasks reconciled at once. Each reconcile is a few apiserver calls, so this bounds the
    request rate a burst of tasks puts on the apiserver, not the number of running Jobs."""

    pending_retry_seconds: float = 10.0
    """Period of the safety-net pass over tasks still waiting for their KeptnTaskDefinition
    (Keptn requeues every 10 s). A definition that appears is seen at once through the watch;
    this pass only covers what a watch cannot see, such as a missing code ConfigMap."""

    error_retry_delays: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
    """Seconds before a reconcile that failed (apiserver or Kafka unreachable) is tried again;
    the last value repeats. Backing off keeps an outage from becoming a retry storm."""

    log_tail_lines: int = 40
    """Lines of the task's output kept in ``status.logTail`` when it finishes."""

    log_tail_bytes: int = 4096
    """Upper bound on ``status.logTail``: a chatty task cannot bloat its KeptnTask (etcd keeps
    objects below 1.5 MiB, and every watcher of KeptnTasks receives the whole object)."""

    log_capture_concurrency: int = 16
    """Pod log reads in flight at once (captured when a container of a task fails)."""


class TaskRunnerSettings(ServiceSettings):
    """Root settings of one task-runner process (``KLT_`` environment variables)."""

    service_name: str = "task-runner"
    tasks: TaskSettings = TaskSettings()
    job_executor: JobExecutorSettings = JobExecutorSettings()
