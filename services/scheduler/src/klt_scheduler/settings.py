"""Settings of the scheduler service."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from klt_common.configs.settings import ServiceSettings

SHARD_LABEL = "klt.sh/scheduler-shard"
"""Namespace label that hands a namespace to the scheduler of the same shard (see
``LifecycleSettings.shard``)."""


class LifecycleSettings(BaseModel):
    """What one scheduler manages and how it paces itself (``KLT_SCHEDULER__*``)."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    consumer_group: str = "klt-scheduler"
    """Kafka consumer group. Every instance of one installation joins the same group, so the
    partitions (and with them the apps, which are the partition keys) are shared out."""

    namespace: str | None = None
    """Watch only this namespace. None watches the whole cluster (production); tests and
    single-tenant installations set it to keep the watch caches small."""

    shard: str = ""
    """Manage only namespaces whose ``klt.sh/scheduler-shard`` label equals this value; the
    default shard "" manages every namespace without the label. Lets a second installation
    (or a test) take namespaces away from the cluster's main scheduler."""

    resync_seconds: float = 30.0
    """Seconds between full passes over every unfinished app and workload version. Events move
    the lifecycle; the resync only catches what events missed (a lost Kafka record, a write
    that failed after its retries), so it can be slow."""

    promotion_tasks_enabled: bool = False
    """Run the PromotionTasks phase after AppPostDeployEvaluations (Keptn's
    ``PROMOTION_TASKS_ENABLED``, off by default as in Keptn)."""

    record_events: bool = True
    """Record core/v1 Events with Keptn's reasons on the app and workload versions."""

    retry_delays: tuple[float, ...] = (0.5, 2.0, 5.0)
    """Seconds between re-runs of a background reconcile that failed (apiserver unavailable);
    after the last one the next resync picks the object up again."""

    max_concurrent_reconciles: int = 64
    """Upper bound on reconciles triggered by watch events that run at once; one object is
    never reconciled twice at the same time regardless."""


class SchedulerSettings(ServiceSettings):
    """Root settings of one scheduler process (``KLT_`` environment variables)."""

    service_name: str = "scheduler"
    scheduler: LifecycleSettings = LifecycleSettings()
