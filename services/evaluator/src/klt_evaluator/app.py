"""Wiring of the evaluator service: what it registers on the service template.

The evaluator's handlers arrive with issue 5; until then the process runs the shared template
(probes, cluster client, bus publisher, staged shutdown) and registers no handler, so that it
can already be deployed, scaled and probed like the finished service.
"""

from __future__ import annotations

from klt_common.service import ServiceContext
from klt_evaluator.settings import EvaluatorSettings


async def setup(context: ServiceContext[EvaluatorSettings]) -> None:
    context.readiness.add("started", lambda: True)
