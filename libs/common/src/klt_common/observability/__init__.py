"""Tracing, metrics, health endpoints and structured logs shared by every service."""

from klt_common.observability.http import ProbeServer, Readiness
from klt_common.observability.logs import JsonFormatter, setup_logging
from klt_common.observability.tracing import install_global, make_tracer_provider

__all__ = [
    "JsonFormatter",
    "ProbeServer",
    "Readiness",
    "install_global",
    "make_tracer_provider",
    "setup_logging",
]
