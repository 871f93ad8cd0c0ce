"""Settings of the app-aggregator service.

Besides the template's groups, the aggregator has one of its own, ``aggregation``, read from
the environment like the rest (``KLT_AGGREGATION__RESYNC_SECONDS``, …).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from klt_common.configs.settings import ServiceSettings

SHARD_LABEL = "klt.sh/aggregator-shard"
"""Namespace label that hands a namespace to one aggregator shard."""


class AggregationSettings(BaseModel):
    """How workloads, apps and their versions are discovered and kept in step with the cluster."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    namespace: str | None = None
    """Only act on this namespace; None means the whole cluster. A namespace-scoped aggregator
    needs only namespaced RBAC, and tests use it so that their aggregator never touches another
    test's objects on a shared apiserver."""

    shard: str = ""
    """Act only on namespaces whose ``klt.sh/aggregator-shard`` label equals this value; the
    default shard "" takes every namespace without the label. Lets a second installation (a
    canary, a tenant, a test run) take namespaces away from the cluster's main aggregator, the
    same way ``klt.sh/scheduler-shard`` does for the scheduler."""

    creation_request_timeout_seconds: float = Field(default=30.0, ge=0)
    """Discovery window in seconds when no KeptnConfig sets
    ``keptnAppCreationRequestTimeoutSeconds``: a multi-service KeptnApp is created this long
    after its KeptnAppCreationRequest, so that workloads rolled out together land in one app
    version. 30 s is Keptn's default."""

    keptn_config_name: str | None = None
    """Only the KeptnConfig of this name counts. None follows Keptn: any KeptnConfig, and when
    there are several, the one written last wins."""

    keptn_config_namespace: str | None = None
    """Only KeptnConfigs in this namespace count; None means every namespace (Keptn's
    behaviour). Usually the klt namespace, so that tenants cannot change the window."""

    resync_seconds: float = Field(default=60.0, gt=0)
    """Period of the full resync, in seconds. It re-schedules every pending
    KeptnAppCreationRequest, re-checks every gated pod and every KeptnApp whose generation has
    no confirmed KeptnAppVersion yet. Events and watches do the work as it happens; the resync
    only catches what they missed (a lost event, a failed write), so a minute bounds the delay
    of a repair without costing more than one read per gated pod."""

    gated_pod_grace_seconds: float = Field(default=5.0, ge=0)
    """A gated pod is checked for its KeptnWorkloadVersion only once it is this old, in seconds.
    The webhook's event normally creates everything within milliseconds; waiting a little keeps
    the reconciler from racing that event path and doing the same work twice."""

    workers: int = Field(default=8, ge=1)
    """Reconcile items (creation requests, apps, gated pods) handled concurrently. Items of one
    app are serialised by a per-app lock whatever this is."""

    retry_delays: tuple[float, ...] = (0.5, 2.0, 5.0, 15.0, 30.0)
    """Seconds before a reconcile item that failed (apiserver down, bus down) is tried again;
    the last delay repeats. It never gives up: the item stands for cluster state that must
    converge, and the backoff keeps a persistent failure from becoming a retry storm."""

    record_events: bool = True
    """Write core/v1 Events (``kubectl describe``) for creations and failures, with Keptn's
    reasons (``CreateWorkloadVersionFinished``, ``CreateAppVersionFailed`` …)."""


class AppAggregatorSettings(ServiceSettings):
    """Root settings of one app-aggregator process (``KLT_`` environment variables)."""

    service_name: str = "app-aggregator"
    aggregation: AggregationSettings = AggregationSettings()
