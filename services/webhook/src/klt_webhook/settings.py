"""Settings of the webhook service."""

from __future__ import annotations

from klt_common.configs.settings import ServiceSettings


class WebhookSettings(ServiceSettings):
    """Root settings of one webhook process (``KLT_`` environment variables)."""

    service_name: str = "webhook"
