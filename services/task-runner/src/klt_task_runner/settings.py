"""Settings of the task-runner service."""

from __future__ import annotations

from klt_common.configs.settings import ServiceSettings


class TaskRunnerSettings(ServiceSettings):
    """Root settings of one task-runner process (``KLT_`` environment variables)."""

    service_name: str = "task-runner"
