"""Settings of the scheduler service."""

from __future__ import annotations

from klt_common.configs.settings import ServiceSettings


class SchedulerSettings(ServiceSettings):
    """Root settings of one scheduler process (``KLT_`` environment variables)."""

    service_name: str = "scheduler"
