"""Settings of the evaluator service."""

from __future__ import annotations

from klt_common.configs.settings import ServiceSettings


class EvaluatorSettings(ServiceSettings):
    """Root settings of one evaluator process (``KLT_`` environment variables)."""

    service_name: str = "evaluator"
