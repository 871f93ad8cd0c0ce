"""Wiring of the webhook service: what it registers on the service template.

The webhook's handlers arrive with issue 3; until then the process runs the shared template
(probes, cluster client, bus publisher, staged shutdown) and registers no handler, so that it
can already be deployed, scaled and probed like the finished service.
"""

from __future__ import annotations

from klt_common.service import ServiceContext
from klt_webhook.settings import WebhookSettings


async def setup(context: ServiceContext[WebhookSettings]) -> None:
    context.readiness.add("started", lambda: True)
