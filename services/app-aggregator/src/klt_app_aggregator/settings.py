"""Settings of the app-aggregator service."""

from __future__ import annotations

from klt_common.configs.settings import ServiceSettings


class AppAggregatorSettings(ServiceSettings):
    """Root settings of one app-aggregator process (``KLT_`` environment variables)."""

    service_name: str = "app-aggregator"
