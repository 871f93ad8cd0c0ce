"""The lifecycle state machine, as pure functions: no I/O, no clock, no globals.

Everything here follows Keptn's lifecycle-operator (``apis/lifecycle/v1/common``, the phase,
task and evaluation handlers, and the two version controllers), so that the state an app or
workload version reaches for given inputs is the state Keptn would have written:

- **Phase order.** An app version runs AppPreDeployTasks, AppPreDeployEvaluations, AppDeploy,
  AppPostDeployTasks, AppPostDeployEvaluations and, when promotion is enabled, PromotionTasks;
  a workload version runs WorkloadPreDeployTasks, WorkloadPreDeployEvaluations, WorkloadDeploy,
  WorkloadPostDeployTasks and WorkloadPostDeployEvaluations. A phase that has passed is skipped
  on every later pass; the first one that has not is worked on, and the pass stops there unless
  it completes.
- **Aggregation** (``overall_state``): any Failed or Deprecated item fails the phase, then any
  Progressing keeps it progressing, then Pending, then Unknown; fewer items than definitions
  (a definition that does not exist yet) keeps it Pending. An empty phase has succeeded.
- **Non-blocking mode** (``blocked``): with ``blockDeployment: false`` a failed task or
  evaluation phase becomes Warning, which counts as passed.
- **Cascade** (``PhaseSpec.deprecates``): a failed phase marks every later phase Deprecated and
  the version Failed; a revision bump marks everything, the version included, Deprecated.
- **Readiness** of the deployed object, per kind (``is_ready``).

The engine (``klt_scheduler.engine``) feeds these functions what it read from the cluster and
writes back what they return.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from klt_common.structs.api import lifecycle
from klt_common.structs.api.enums import CheckType, KeptnState, Phase
from klt_common.structs.discovery import create_resource_name

State = KeptnState
Status = lifecycle.KeptnAppVersionStatus | lifecycle.KeptnWorkloadVersionStatus

LONG_NAMES: Mapping[str, str] = {
    Phase.APP_PRE_DEPLOY_TASKS: "App Pre-Deployment Tasks",
    Phase.APP_PRE_DEPLOY_EVALUATIONS: "App Pre-Deployment Evaluations",
    Phase.APP_DEPLOY: "App Deployment",
    Phase.APP_POST_DEPLOY_TASKS: "App Post-Deployment Tasks",
    Phase.APP_POST_DEPLOY_EVALUATIONS: "App Post-Deployment Evaluations",
    Phase.PROMOTION_TASKS: "Promotion Tasks",
    Phase.WORKLOAD_PRE_DEPLOY_TASKS: "Workload Pre-Deployment Tasks",
    Phase.WORKLOAD_PRE_DEPLOY_EVALUATIONS: "Workload Pre-Deployment Evaluations",
    Phase.WORKLOAD_DEPLOY: "Workload Deployment",
    Phase.WORKLOAD_POST_DEPLOY_TASKS: "Workload Post-Deployment Tasks",
    Phase.WORKLOAD_POST_DEPLOY_EVALUATIONS: "Workload Post-Deployment Evaluations",
    Phase.COMPLETED: "Completed",
    Phase.RECONCILE_TASK: "Reconcile Task",
    Phase.RECONCILE_EVALUATION: "Reconcile Evaluation",
    Phase.RECONCILE_WORKLOAD: "Reconcile Workloads",
    Phase.CREATE_TASK: "Create Task",
    Phase.CREATE_EVALUATION: "Create Evaluation",
    Phase.DEPRECATE_APP_VERSION: "Deprecate AppVersion",
    Phase.APP_COMPLETED: "App Completed",
    Phase.WORKLOAD_COMPLETED: "Workload Completed",
    Phase.DEPRECATED: "Deprecated",
}
"""Keptn's long phase names: the first part of every Kubernetes Event message."""


def long_name(phase: str) -> str:
    return LONG_NAMES.get(phase, phase)


# --------------------------------------------------------------------------------------------
# Aggregation


def overall_state(states: Iterable[KeptnState], total: int) -> KeptnState:
    """Keptn's ``GetOverallState``: the state of a phase from the states of its items.

    ``total`` is the number of definitions the phase asks for; an item whose definition does
    not exist is never created, so fewer states than ``total`` means the phase is still
    waiting (Pending), not done. As in Keptn, a Warning item is counted nowhere (its summary
    has no bucket for it), so it, too, leaves the phase Pending.
    """
    counts = Counter(states)
    if counts[KeptnState.FAILED] or counts[KeptnState.DEPRECATED]:
        return KeptnState.FAILED
    if counts[KeptnState.PROGRESSING]:
        return KeptnState.PROGRESSING
    if counts[KeptnState.PENDING]:
        return KeptnState.PENDING
    if counts[KeptnState.UNKNOWN]:
        return KeptnState.UNKNOWN
    if sum(counts[state] for state in _COUNTED) != total:
        return KeptnState.PENDING
    return KeptnState.SUCCEEDED


_COUNTED = (
    KeptnState.FAILED,
    KeptnState.DEPRECATED,
    KeptnState.SUCCEEDED,
    KeptnState.PROGRESSING,
    KeptnState.PENDING,
    KeptnState.UNKNOWN,
)


def blocked(state: KeptnState, block_deployment: bool) -> KeptnState:
    """Keptn's ``GetOverallStateBlockedDeployment``: Failed reads Warning in non-blocking mode."""
    if not block_deployment and state is KeptnState.FAILED:
        return KeptnState.WARNING
    return state


# --------------------------------------------------------------------------------------------
# Phases


class Kind(Enum):
    """What a phase waits for."""

    TASKS = "tasks"
    EVALUATIONS = "evaluations"
    WORKLOADS = "workloads"
    """AppDeploy: the app's workload versions."""
    DEPLOYMENT = "deployment"
    """WorkloadDeploy: the Deployment/StatefulSet/DaemonSet becoming available."""


@dataclass(frozen=True)
class PhaseSpec:
    """One phase of an app or workload version and where its state lives in the status."""

    phase: Phase
    kind: Kind
    state_field: str
    """Status attribute holding the phase's state (``pre_deployment_status``)."""
    items_field: str | None = None
    """Status attribute holding the phase's ItemStatus list, for task and evaluation phases."""
    definitions_field: str | None = None
    """Spec attribute listing the definitions to run."""
    check_type: CheckType | None = None
    deprecates: tuple[str, ...] = ()
    """State fields set to Deprecated when this phase fails."""
    lenient: bool = True
    """Passed when Warning in non-blocking mode (Keptn's ``Is…Succeeded(isBlocking)``)."""
    any_completion: bool = False
    """Passed once completed in any way (Keptn's ``IsPromotionCompleted``)."""

    @property
    def long_name(self) -> str:
        return long_name(self.phase)

    @property
    def blockable(self) -> bool:
        """Task and evaluation phases turn Failed into Warning in non-blocking mode."""
        return self.kind in (Kind.TASKS, Kind.EVALUATIONS)


_PRE = "pre_deployment_status"
_PRE_EVAL = "pre_deployment_evaluation_status"
_POST = "post_deployment_status"
_POST_EVAL = "post_deployment_evaluation_status"
_PROMOTION = "promotion_status"
_WORKLOADS = "workload_overall_status"
_DEPLOYMENT = "deployment_status"

_APP_PHASES: tuple[PhaseSpec, ...] = (
    PhaseSpec(
        Phase.APP_PRE_DEPLOY_TASKS,
        Kind.TASKS,
        _PRE,
        "pre_deployment_task_status",
        "pre_deployment_tasks",
        CheckType.PRE,
        (_PRE_EVAL, _WORKLOADS, _POST, _POST_EVAL, _PROMOTION),
    ),
    PhaseSpec(
        Phase.APP_PRE_DEPLOY_EVALUATIONS,
        Kind.EVALUATIONS,
        _PRE_EVAL,
        "pre_deployment_evaluation_task_status",
        "pre_deployment_evaluations",
        CheckType.PRE_EVAL,
        (_WORKLOADS, _POST, _POST_EVAL, _PROMOTION),
    ),
    PhaseSpec(
        Phase.APP_DEPLOY, Kind.WORKLOADS, _WORKLOADS, deprecates=(_POST, _POST_EVAL, _PROMOTION)
    ),
    PhaseSpec(
        Phase.APP_POST_DEPLOY_TASKS,
        Kind.TASKS,
        _POST,
        "post_deployment_task_status",
        "post_deployment_tasks",
        CheckType.POST,
        (_POST_EVAL, _PROMOTION),
    ),
    PhaseSpec(
        Phase.APP_POST_DEPLOY_EVALUATIONS,
        Kind.EVALUATIONS,
        _POST_EVAL,
        "post_deployment_evaluation_task_status",
        "post_deployment_evaluations",
        CheckType.POST_EVAL,
        (_PROMOTION,),
    ),
)
_PROMOTION_PHASE = PhaseSpec(
    Phase.PROMOTION_TASKS,
    Kind.TASKS,
    _PROMOTION,
    "promotion_task_status",
    "promotion_tasks",
    CheckType.PROMOTION,
    any_completion=True,
)
_WORKLOAD_PHASES: tuple[PhaseSpec, ...] = (
    PhaseSpec(
        Phase.WORKLOAD_PRE_DEPLOY_TASKS,
        Kind.TASKS,
        _PRE,
        "pre_deployment_task_status",
        "pre_deployment_tasks",
        CheckType.PRE,
        (_PRE_EVAL, _DEPLOYMENT, _POST, _POST_EVAL),
    ),
    PhaseSpec(
        Phase.WORKLOAD_PRE_DEPLOY_EVALUATIONS,
        Kind.EVALUATIONS,
        _PRE_EVAL,
        "pre_deployment_evaluation_task_status",
        "pre_deployment_evaluations",
        CheckType.PRE_EVAL,
        (_DEPLOYMENT, _POST, _POST_EVAL),
    ),
    PhaseSpec(
        Phase.WORKLOAD_DEPLOY,
        Kind.DEPLOYMENT,
        _DEPLOYMENT,
        deprecates=(_POST, _POST_EVAL),
        lenient=False,
    ),
    PhaseSpec(
        Phase.WORKLOAD_POST_DEPLOY_TASKS,
        Kind.TASKS,
        _POST,
        "post_deployment_task_status",
        "post_deployment_tasks",
        CheckType.POST,
        (_POST_EVAL,),
    ),
    PhaseSpec(
        Phase.WORKLOAD_POST_DEPLOY_EVALUATIONS,
        Kind.EVALUATIONS,
        _POST_EVAL,
        "post_deployment_evaluation_task_status",
        "post_deployment_evaluations",
        CheckType.POST_EVAL,
    ),
)

_ALL_APP_STATE_FIELDS = (_PRE, _PRE_EVAL, _WORKLOADS, _POST, _POST_EVAL, _PROMOTION)
_ALL_WORKLOAD_STATE_FIELDS = (_PRE, _PRE_EVAL, _DEPLOYMENT, _POST, _POST_EVAL)


def app_phases(*, promotion_enabled: bool) -> tuple[PhaseSpec, ...]:
    """The phases of a KeptnAppVersion, in order."""
    return (*_APP_PHASES, _PROMOTION_PHASE) if promotion_enabled else _APP_PHASES


def workload_phases() -> tuple[PhaseSpec, ...]:
    """The phases of a KeptnWorkloadVersion, in order."""
    return _WORKLOAD_PHASES


def phase_spec(phase: str) -> PhaseSpec | None:
    for spec in (*_APP_PHASES, _PROMOTION_PHASE, *_WORKLOAD_PHASES):
        if spec.phase == phase:
            return spec
    return None


def phase_state(status: Status, spec: PhaseSpec) -> KeptnState:
    state: KeptnState = getattr(status, spec.state_field)
    return state


def phase_passed(state: KeptnState, spec: PhaseSpec, *, block_deployment: bool) -> bool:
    """Whether a later pass skips this phase (Keptn's ``Is…Succeeded``/``Is…Completed``)."""
    if spec.any_completion:
        return state.is_completed
    if state is KeptnState.SUCCEEDED:
        return True
    return spec.lenient and not block_deployment and state is KeptnState.WARNING


def is_finished(status: Status) -> bool:
    """Nothing will ever change the version again (Keptn's abort rule plus completion)."""
    return status.status in (KeptnState.FAILED, KeptnState.DEPRECATED) or (
        status.status is KeptnState.SUCCEEDED and status.end_time is not None
    )


def aborted(status: Status) -> bool:
    """Keptn's ``shouldAbortPhase``: a Failed or Deprecated version is never worked on again."""
    return status.status in (KeptnState.FAILED, KeptnState.DEPRECATED)


def deprecate_remaining(status: Status, spec: PhaseSpec) -> None:
    """Keptn's ``DeprecateRemainingPhases`` for a failed phase: later phases Deprecated, the
    version Failed."""
    for field_name in spec.deprecates:
        setattr(status, field_name, KeptnState.DEPRECATED)
    status.status = KeptnState.FAILED


def deprecate_all(status: Status) -> None:
    """A superseded revision: every phase and the version itself Deprecated."""
    fields = (
        _ALL_APP_STATE_FIELDS
        if isinstance(status, lifecycle.KeptnAppVersionStatus)
        else _ALL_WORKLOAD_STATE_FIELDS
    )
    for field_name in fields:
        setattr(status, field_name, KeptnState.DEPRECATED)
    status.status = KeptnState.DEPRECATED


def gate_open(status: lifecycle.KeptnWorkloadVersionStatus, *, block_deployment: bool) -> bool:
    """Whether the workload's pods may be scheduled: its pre-deployment tasks and evaluations
    passed (Succeeded, or Warning in non-blocking mode).

    Keptn removes the gate as soon as ``deploymentStatus`` is Progressing *or completed*, and a
    failed pre-check marks it Deprecated, which counts as completed, so the pods of a workload
    whose checks failed run anyway (keptn#3920). Here they stay gated.
    """
    pre, pre_eval = _WORKLOAD_PHASES[0], _WORKLOAD_PHASES[1]
    return phase_passed(
        status.pre_deployment_status, pre, block_deployment=block_deployment
    ) and phase_passed(
        status.pre_deployment_evaluation_status, pre_eval, block_deployment=block_deployment
    )


def app_pre_evaluations_passed(state: KeptnState, *, block_deployment: bool) -> bool:
    """Whether a workload version may start (``checkPreEvaluationStatusOfApp``).

    Keptn waits for exactly Succeeded, even in non-blocking mode, where a failed app
    pre-evaluation reads Warning and the app's workloads then wait forever. Here Warning lets
    them start, consistently with the app version itself carrying on.
    """
    return state is KeptnState.SUCCEEDED or (not block_deployment and state is KeptnState.WARNING)


# --------------------------------------------------------------------------------------------
# Items (one KeptnTask or KeptnEvaluation per definition)


def frozen(item: lifecycle.ItemStatus, kind: Kind) -> bool:
    """Items the phase never looks at again: a task that Succeeded or Failed, an evaluation that
    completed in any way (Keptn's task and evaluation handlers differ in exactly this)."""
    if kind is Kind.TASKS:
        return item.status in (KeptnState.SUCCEEDED, KeptnState.FAILED)
    return item.status.is_completed


def unique(names: Sequence[str] | None) -> list[str]:
    """Definition names in order, without repeats (each definition runs once per phase)."""
    seen: dict[str, None] = {}
    for name in names or ():
        seen.setdefault(name, None)
    return list(seen)


def check_name(check_type: str, definition: str, parent_uid: str, phase: str) -> str:
    """The name of the KeptnTask or KeptnEvaluation of one definition in one phase.

    Keptn appends a random number, so a restarted operator creates a second task for the same
    definition (keptn#3921). The suffix here is a hash of the parent's uid, the phase and the
    definition: whoever creates it, and however often, the object is the same.
    """
    digest = hashlib.sha256(f"{parent_uid}/{phase}/{definition}".encode()).hexdigest()[:10]
    return create_resource_name(check_type, definition, digest)


def merge_metadata(*layers: Mapping[str, str] | None) -> dict[str, str]:
    """Later layers win (Keptn's ``MergeMaps``: workload metadata over app metadata)."""
    merged: dict[str, str] = {}
    for layer in layers:
        merged.update(layer or {})
    return merged


# --------------------------------------------------------------------------------------------
# Readiness of the deployed object


READY_KINDS = ("ReplicaSet", "StatefulSet", "DaemonSet")


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) else default


def replicaset_ready(rs: Mapping[str, Any]) -> bool:
    """``spec.replicas == status.availableReplicas`` (replicas default to 1)."""
    spec = rs.get("spec") or {}
    status = rs.get("status") or {}
    return _int(spec.get("replicas"), 1) == _int(status.get("availableReplicas"))


def statefulset_ready(sts: Mapping[str, Any]) -> bool:
    """``spec.replicas == status.availableReplicas`` (replicas default to 1)."""
    return replicaset_ready(sts)


def daemonset_ready(ds: Mapping[str, Any]) -> bool:
    """``status.desiredNumberScheduled == status.numberReady``."""
    status = ds.get("status") or {}
    return _int(status.get("desiredNumberScheduled")) == _int(status.get("numberReady"))


def rollout_ready(rollout: Mapping[str, Any]) -> bool:
    """An Argo Rollout: ``status.replicas == status.updatedReplicas`` and phase Healthy."""
    status = rollout.get("status") or {}
    return (
        _int(status.get("replicas")) == _int(status.get("updatedReplicas"))
        and status.get("phase") == "Healthy"
    )


def rollout_owner(rs: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The Argo Rollout owning a ReplicaSet, if any."""
    for owner in (rs.get("metadata") or {}).get("ownerReferences") or []:
        if isinstance(owner, Mapping) and owner.get("kind") == "Rollout":
            return owner
    return None


class UnsupportedKind(ValueError):
    """A workload version refers to a kind whose readiness klt cannot judge."""


def is_ready(kind: str, obj: Mapping[str, Any], rollout: Mapping[str, Any] | None = None) -> bool:
    """Keptn's deployment check for the object a workload version stands for.

    Args:
        kind: ``resourceReference.kind``.
        obj: the ReplicaSet, StatefulSet or DaemonSet.
        rollout: for a ReplicaSet owned by an Argo Rollout, that Rollout; its health then
            decides instead of the ReplicaSet's replica counts.

    Raises:
        UnsupportedKind: any other kind (Keptn fails the reconcile the same way).
    """
    if kind == "ReplicaSet":
        if rollout_owner(obj) is not None:
            return rollout is not None and rollout_ready(rollout)
        return replicaset_ready(obj)
    if kind == "StatefulSet":
        return statefulset_ready(obj)
    if kind == "DaemonSet":
        return daemonset_ready(obj)
    raise UnsupportedKind(f"unsupported resourceReference kind {kind!r}")
