"""Settings of the webhook service."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from klt_common.configs.settings import ServiceSettings


class PodAdmissionSettings(BaseModel):
    """How pods are admitted and gated (the mutating endpoint)."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    event_queue_size: int = 10_000
    """Admitted-pod events waiting to be published. Admission never waits for Kafka: when the
    queue is full (the bus is down for long), events are dropped and counted, and the
    app-aggregator's reconciliation of gated pods picks those workloads up instead."""

    cache_miss_read_timeout: float = 1.0
    """Seconds allowed for one apiserver read when a pod's namespace or parent is not in the
    watch caches yet (a namespace or Deployment created a moment before its first pod). Reads
    only; the admission path never writes to the apiserver."""

    skip_gate_when_prechecks_passed: bool = True
    """Admit new pods of a workload version whose pre-deployment checks already passed without
    a gate (Keptn gates them and releases them up to 10 s later)."""


class WebhookSettings(ServiceSettings):
    """Root settings of one webhook process (``KLT_`` environment variables)."""

    service_name: str = "webhook"
    pods: PodAdmissionSettings = PodAdmissionSettings()
