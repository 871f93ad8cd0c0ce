"""The string vocabularies of the Keptn API.

Every enum is a :class:`enum.StrEnum`, so a member compares equal to its wire value
(``KeptnState.PENDING == "Pending"``) and serialises as that value. Status strings are asserted
literally by Keptn's own tests and by users' dashboards, so the values must never change.
"""

from __future__ import annotations

from enum import StrEnum, unique

__all__ = ["Aggregation", "AnalysisState", "CheckType", "KeptnState", "Phase"]


@unique
class KeptnState(StrEnum):
    """State of a phase, a check or a whole App/Workload version."""

    PENDING = "Pending"
    PROGRESSING = "Progressing"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    UNKNOWN = "Unknown"
    DEPRECATED = "Deprecated"
    #: A failure that did not block the deployment (KeptnConfig ``blockDeployment: false``).
    WARNING = "Warning"

    @property
    def is_completed(self) -> bool:
        """True once nothing will change this state again (Warning and Deprecated included)."""
        return self in _COMPLETED

    @property
    def is_succeeded(self) -> bool:
        return self is KeptnState.SUCCEEDED

    @property
    def is_failed(self) -> bool:
        return self is KeptnState.FAILED

    @property
    def is_pending(self) -> bool:
        return self is KeptnState.PENDING


_COMPLETED = frozenset(
    {KeptnState.SUCCEEDED, KeptnState.FAILED, KeptnState.DEPRECATED, KeptnState.WARNING}
)


@unique
class CheckType(StrEnum):
    """Which lifecycle slot a KeptnTask or KeptnEvaluation fills; also the name prefix."""

    PRE = "pre"
    POST = "post"
    PROMOTION = "promotion"
    PRE_EVAL = "pre-eval"
    POST_EVAL = "post-eval"


@unique
class Phase(StrEnum):
    """Phase short names: ``status.currentPhase`` values, span names, event-reason prefixes."""

    APP_PRE_DEPLOY_TASKS = "AppPreDeployTasks"
    APP_PRE_DEPLOY_EVALUATIONS = "AppPreDeployEvaluations"
    APP_DEPLOY = "AppDeploy"
    APP_POST_DEPLOY_TASKS = "AppPostDeployTasks"
    APP_POST_DEPLOY_EVALUATIONS = "AppPostDeployEvaluations"
    PROMOTION_TASKS = "PromotionTasks"
    WORKLOAD_PRE_DEPLOY_TASKS = "WorkloadPreDeployTasks"
    WORKLOAD_PRE_DEPLOY_EVALUATIONS = "WorkloadPreDeployEvaluations"
    WORKLOAD_DEPLOY = "WorkloadDeploy"
    WORKLOAD_POST_DEPLOY_TASKS = "WorkloadPostDeployTasks"
    WORKLOAD_POST_DEPLOY_EVALUATIONS = "WorkloadPostDeployEvaluations"
    COMPLETED = "Completed"
    # Technical phases: they name events and spans, never a lifecycle step.
    RECONCILE_TASK = "ReconcileTask"
    RECONCILE_EVALUATION = "ReconcileEvaluation"
    RECONCILE_WORKLOAD = "ReconcileWorkload"
    CREATE_TASK = "CreateTask"
    CREATE_EVALUATION = "CreateEvaluation"
    CREATE_WORKLOAD = "CreateWorkload"
    UPDATE_WORKLOAD = "UpdateWorkload"
    CREATE_WORKLOAD_VERSION = "CreateWorkloadVersion"
    CREATE_APP_VERSION = "CreateAppVersion"
    CREATE_APP_CREATION_REQUEST = "CreateAppCreationRequest"
    DEPRECATE_APP_VERSION = "DeprecateAppVersion"
    APP_COMPLETED = "AppCompleted"
    WORKLOAD_COMPLETED = "WorkloadCompleted"
    DEPRECATED = "Deprecated"


@unique
class AnalysisState(StrEnum):
    """Progress of an Analysis (metrics.keptn.sh)."""

    PENDING = "Pending"
    PROGRESSING = "Progressing"
    COMPLETED = "Completed"

    @property
    def is_completed(self) -> bool:
        return self is AnalysisState.COMPLETED


@unique
class Aggregation(StrEnum):
    """How a KeptnMetric with ``range.step`` folds the step values into one."""

    P90 = "p90"
    P95 = "p95"
    P99 = "p99"
    MAX = "max"
    MIN = "min"
    AVG = "avg"
    MEDIAN = "median"
