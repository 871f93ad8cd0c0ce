"""``options.keptn.sh/v1alpha1``: the cluster-wide KeptnConfig.

Keptn never promoted this group past v1alpha1, so v1alpha1 is both the served and the storage
version here too.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from klt_common.structs.api._base import ApiModel, Duration, KeptnResource

GROUP = "options.keptn.sh"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


class KeptnConfigSpec(ApiModel):
    """Operator-wide settings; when several KeptnConfigs exist, the last one applied wins."""

    otel_collector_url: str | None = Field(default=None, alias="OTelCollectorUrl")
    """host:port of the OTLP gRPC collector; empty disables tracing."""
    keptn_app_creation_request_timeout_seconds: int = 30
    """How long app discovery waits for more workloads before it creates a KeptnApp."""
    cloud_events_endpoint: str | None = None
    """Where lifecycle events are also POSTed as CloudEvents; empty disables them."""
    block_deployment: bool = True
    """When false, failed pre/post checks become Warning and the rollout continues."""
    observability_timeout: Duration = "5m"
    """How long a workload may take to become ready before WorkloadDeploy fails."""


class KeptnConfig(KeptnResource):
    """Settings of the lifecycle operator."""

    API_VERSION: ClassVar[str] = API_VERSION
    api_version: str = API_VERSION
    kind: Literal["KeptnConfig"] = "KeptnConfig"
    spec: KeptnConfigSpec = Field(default_factory=KeptnConfigSpec)
    status: str | None = None
    """Unused."""
