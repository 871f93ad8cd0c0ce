"""Settings of the evaluator service.

Besides the template's groups the evaluator has one of its own, ``evaluator``, read from the
environment like the rest (``KLT_EVALUATOR__PROVIDER_TIMEOUT_SECONDS``,
``KLT_EVALUATOR__SHARD`` …). Every duration is in seconds.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from klt_common.configs.settings import ServiceSettings

SHARD_LABEL = "evaluator.klt.sh/shard"
"""Label that assigns a KeptnMetric, KeptnEvaluation or Analysis to one evaluator shard."""


class EvaluatorGroup(BaseModel):
    """How the evaluator fetches metrics and runs evaluations and analyses."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    shard: str = ""
    """Which objects this evaluator works on. Empty: every KeptnMetric, KeptnEvaluation and
    Analysis *without* the label ``evaluator.klt.sh/shard``. Non-empty: only those labelled
    ``evaluator.klt.sh/shard=<shard>``. Lets a second evaluator (a canary, a test run, a tenant
    with its own network access) own a slice of the objects without the first one touching them.
    Definitions, providers and templates are read whatever their labels."""

    consumer_group: str = "klt-evaluator"
    """Kafka consumer group of the ``evaluation.requested`` handler."""

    provider_timeout_seconds: float = Field(default=20.0, gt=0)
    """How long one provider query may take, per request (Keptn: 20 s). A provider can override
    it with the annotation ``evaluator.klt.sh/timeout`` (a Go duration such as ``5s``)."""

    max_response_bytes: int = Field(default=16 * 1024 * 1024, gt=0)
    """Largest provider response read, in bytes. A query that returns more is almost certainly
    wrong (a whole time series dump); refusing it protects the process's memory."""

    connections_per_target: int = Field(default=32, gt=0)
    """Open connections kept per provider target (one aiohttp session per target)."""

    fetch_concurrency: int = Field(default=64, gt=0)
    """KeptnMetric fetches in flight at once. 1000 metrics at a 10 s interval need ~100
    fetches per second; at a few ms each that is a handful in flight, so 64 is ample headroom
    for a slow provider without letting one stall every other metric."""

    spread_seconds: float = Field(default=10.0, ge=0)
    """Metrics are fetched on a phase of their own within a window of this many seconds (or
    their interval, if shorter), so a thousand metrics created at once are fetched at an even
    rate instead of in one burst per interval. A fetch is only ever moved later, by less than the
    window, and only until the metric is on its phase. 0 turns spreading off."""

    min_fetch_interval_seconds: float = Field(default=1.0, gt=0)
    """Floor for ``fetchIntervalSeconds`` (the CRD allows 0, which would be a hot loop)."""

    status_retry_seconds: float = Field(default=5.0, gt=0)
    """When a status write fails (apiserver down), try again after this long."""

    definition_retry_seconds: float = Field(default=10.0, gt=0)
    """How often an evaluation or analysis whose definition is missing looks again (Keptn:
    10 s). A definition that appears wakes its waiters at once through the watch."""

    analysis_concurrency: int = Field(default=4, gt=0)
    """Provider queries in flight for analyses, across all analyses (Keptn: 2 workers)."""

    analysis_retry_seconds: float = Field(default=10.0, gt=0)
    """When some of an analysis' values could not be fetched, fetch those again after this long
    (Keptn: 10 s). Values already fetched are kept in ``status.storedValues``."""

    dql_auth_url: str = "https://sso.dynatrace.com/sso/oauth2/token"
    """OAuth token endpoint for ``dql`` providers. A provider can override it with the
    annotation ``evaluator.klt.sh/dql-auth-url`` (dev and sprint tenants use other SSO hosts)."""

    dql_poll_interval_seconds: float = Field(default=10.0, ge=0)
    """Wait between polls of a DQL query that is still running (Keptn: 10 s)."""

    dql_max_polls: int = Field(default=5, ge=1)
    """Polls before a running DQL query counts as timed out (Keptn: 5)."""

    idle_session_seconds: float = Field(default=600.0, gt=0)
    """An HTTP session to a provider target that was not used for this long is closed."""


class EvaluatorSettings(ServiceSettings):
    """Root settings of one evaluator process (``KLT_`` environment variables)."""

    service_name: str = "evaluator"
    evaluator: EvaluatorGroup = EvaluatorGroup()

    def shard_selector(self) -> str:
        """The label selector of the objects this evaluator owns."""
        shard = self.evaluator.shard
        return f"{SHARD_LABEL}={shard}" if shard else f"!{SHARD_LABEL}"

    def owns(self, labels: dict[str, str] | None) -> bool:
        """Whether an object with these labels belongs to this evaluator's shard."""
        return (labels or {}).get(SHARD_LABEL, "") == self.evaluator.shard
