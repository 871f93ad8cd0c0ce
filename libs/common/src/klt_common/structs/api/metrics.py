"""``metrics.keptn.sh/v1``: metrics, their providers, and analyses.

``status.rawValue`` of a KeptnMetric is Go ``[]byte``, so on the wire it is base64 text; it is
kept as that text here and decoding is left to whoever needs the bytes. Quantities in analysis
targets are ``int | str`` exactly as Kubernetes quantities are written (``5``, ``"500m"``).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field

from klt_common.structs.api._base import (
    ApiModel,
    Crd,
    Duration,
    KeptnResource,
    Quantity,
    Time,
)
from klt_common.structs.api.enums import Aggregation, AnalysisState

GROUP = "metrics.keptn.sh"
VERSION = "v1"
API_VERSION = f"{GROUP}/{VERSION}"

#: Keptn's (unanchored) pattern for a provider type.
# "http" is klt's generic HTTP/JSON provider (keptn#745); the rest are Keptn's.
PROVIDER_TYPE_PATTERN = "cortex|datadog|dql|dynatrace|prometheus|thanos|elastic|http"


def _blank_is_pending(value: Any) -> Any:
    # Keptn's Go type writes "" before the first reconcile and treats it as Pending.
    return AnalysisState.PENDING if value == "" else value


# --- KeptnMetric -------------------------------------------------------------------------------


class ProviderRef(ApiModel):
    """A KeptnMetricsProvider in the metric's namespace."""

    name: str


class RangeSpec(ApiModel):
    """The time range a metric query covers."""

    interval: str = "5m"
    """Length of the range, counting back from now."""
    step: str | None = None
    """Resolution of a range query; requires ``aggregation``."""
    aggregation: Aggregation | None = None
    """How the step values fold into one value; requires ``step``."""
    stored_results: Annotated[int, Field(le=255)] | None = None
    """How many past results ``status.intervalResults`` keeps."""


class KeptnMetricSpec(ApiModel):
    """Desired state of a KeptnMetric."""

    provider: ProviderRef
    query: str
    """The query in the provider's language."""
    fetch_interval_seconds: int
    """How often the query runs."""
    range: RangeSpec | None = None


class IntervalResult(ApiModel):
    """One stored result of a ranged metric."""

    value: str
    range: RangeSpec
    last_updated: Time
    err_msg: str | None = None


class KeptnMetricStatus(ApiModel):
    """The latest value of a KeptnMetric."""

    value: str | None = None
    raw_value: str | None = None
    """The provider's raw answer, base64 encoded (capped at 1 MB)."""
    last_updated: Time | None = None
    err_msg: str | None = None
    """Why the last query failed."""
    interval_results: list[IntervalResult] | None = None


class KeptnMetric(KeptnResource):
    """A query against a metrics provider, refreshed at a fixed interval."""

    API_VERSION: ClassVar[str] = API_VERSION
    api_version: str = API_VERSION
    kind: Literal["KeptnMetric"] = "KeptnMetric"
    spec: KeptnMetricSpec
    status: KeptnMetricStatus | None = None


# --- KeptnMetricsProvider ----------------------------------------------------------------------


class SecretKeySelector(ApiModel):
    """A key of a Secret in the provider's namespace."""

    name: str | None = None
    key: str
    optional: bool | None = None


class KeptnMetricsProviderSpec(ApiModel):
    """Where and how to reach a metrics backend."""

    type: Annotated[str, Field(pattern=PROVIDER_TYPE_PATTERN)] | None = None
    """cortex, datadog, dql, dynatrace, elastic, prometheus or thanos; defaults to the name."""
    target_server: str
    """Base URL of the backend, with scheme and port."""
    secret_key_ref: SecretKeySelector | None = None
    """Credentials for the backend."""
    insecure_skip_tls_verify: bool = False


class KeptnMetricsProvider(KeptnResource):
    """A metrics backend that KeptnMetrics and AnalysisValueTemplates query."""

    API_VERSION: ClassVar[str] = API_VERSION
    api_version: str = API_VERSION
    kind: Literal["KeptnMetricsProvider"] = "KeptnMetricsProvider"
    spec: KeptnMetricsProviderSpec
    status: str | None = None
    """Unused."""


# --- Analysis, AnalysisDefinition, AnalysisValueTemplate ---------------------------------------


class ObjectReference(ApiModel):
    """A named object, optionally in another namespace."""

    name: str
    namespace: str | None = None


class Timeframe(ApiModel):
    """Either ``from`` and ``to``, or ``recent``."""

    from_: Time | None = Field(default=None, alias="from")
    to: Time | None = None
    recent: Duration | None = None
    """A duration counting back from now, for example ``5m``."""


class AnalysisSpec(ApiModel):
    """Desired state of an Analysis."""

    timeframe: Timeframe
    args: dict[str, str] | None = None
    """Values for the placeholders in the templates' queries."""
    analysis_definition: ObjectReference


class ProviderResult(ApiModel):
    """A value already fetched for one objective."""

    objective_reference: ObjectReference | None = None
    query: str | None = None
    value: str | None = None
    err_msg: str | None = None


AnalysisStateField = Annotated[AnalysisState, BeforeValidator(_blank_is_pending)]


class AnalysisStatus(ApiModel):
    """Result of an Analysis."""

    timeframe: Annotated[Timeframe, Crd(required=True)] = Field(default_factory=Timeframe)
    """The absolute time frame evaluated, fixed when the analysis starts."""
    raw: str | None = None
    """The full result as JSON."""
    pass_: bool | None = Field(default=None, alias="pass")
    warning: bool | None = None
    state: Annotated[AnalysisStateField, Crd(required=True, emit_default=False)] = (
        AnalysisState.PENDING
    )
    stored_values: dict[str, ProviderResult] | None = None
    """Per objective, the value fetched so far."""


class Analysis(KeptnResource):
    """A one-off scoring of an AnalysisDefinition over a time frame."""

    API_VERSION: ClassVar[str] = API_VERSION
    api_version: str = API_VERSION
    kind: Literal["Analysis"] = "Analysis"
    spec: AnalysisSpec
    status: AnalysisStatus | None = None


class OperatorValue(ApiModel):
    """A fixed value to compare with."""

    fixed_value: Quantity


class RangeValue(ApiModel):
    """A closed range (``inRange``) or its complement (``notInRange``)."""

    low_bound: Quantity
    high_bound: Quantity


class Operator(ApiModel):
    """Exactly one comparison."""

    less_than_or_equal: OperatorValue | None = None
    less_than: OperatorValue | None = None
    greater_than: OperatorValue | None = None
    greater_than_or_equal: OperatorValue | None = None
    equal_to: OperatorValue | None = None
    in_range: RangeValue | None = None
    not_in_range: RangeValue | None = None


class Target(ApiModel):
    """When an objective fails, or only warns."""

    failure: Operator | None = None
    warning: Operator | None = None


class AnalysisObjective(ApiModel):
    """One scored objective of an AnalysisDefinition."""

    analysis_value_template_ref: ObjectReference
    target: Target | None = None
    weight: int = 1
    key_objective: bool = False
    """A failed key objective fails the whole analysis."""


class TotalScore(ApiModel):
    """Score thresholds, in percent of the maximum score."""

    pass_percentage: Annotated[int, Field(ge=0, le=100)]
    warning_percentage: Annotated[int, Field(ge=0, le=100)]


class AnalysisDefinitionSpec(ApiModel):
    """Desired state of an AnalysisDefinition."""

    objectives: list[AnalysisObjective] | None = None
    total_score: TotalScore


class AnalysisDefinition(KeptnResource):
    """Objectives and score thresholds for Analyses."""

    API_VERSION: ClassVar[str] = API_VERSION
    api_version: str = API_VERSION
    kind: Literal["AnalysisDefinition"] = "AnalysisDefinition"
    spec: AnalysisDefinitionSpec
    status: str | None = None
    """Unused."""


class AnalysisValueTemplateSpec(ApiModel):
    """Desired state of an AnalysisValueTemplate."""

    provider: ObjectReference
    """The KeptnMetricsProvider to query."""
    query: str
    """The query, with Go-template placeholders filled from the Analysis' args."""


class AnalysisValueTemplate(KeptnResource):
    """A parameterised query used by AnalysisDefinition objectives."""

    API_VERSION: ClassVar[str] = API_VERSION
    api_version: str = API_VERSION
    kind: Literal["AnalysisValueTemplate"] = "AnalysisValueTemplate"
    spec: AnalysisValueTemplateSpec
    status: str | None = None
    """Unused."""
