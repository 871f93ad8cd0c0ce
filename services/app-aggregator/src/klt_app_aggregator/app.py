"""Wiring of the app-aggregator service: what it registers on the service template.

The app-aggregator's handlers arrive with issue 3; until then the process runs the shared template
(probes, cluster client, bus publisher, staged shutdown) and registers no handler, so that it
can already be deployed, scaled and probed like the finished service.
"""

from __future__ import annotations

from klt_app_aggregator.settings import AppAggregatorSettings
from klt_common.service import ServiceContext


async def setup(context: ServiceContext[AppAggregatorSettings]) -> None:
    context.readiness.add("started", lambda: True)
