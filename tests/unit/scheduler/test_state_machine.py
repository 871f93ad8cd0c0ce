"""The lifecycle state machine as Keptn defines it: aggregation, blocking, phase order, the
deprecation cascade, what counts as passed, the gate rule, check names, PhaseChanged diffs."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from klt_common.structs.api import lifecycle
from klt_common.structs.api.enums import KeptnState, Phase
from klt_scheduler import machine
from klt_scheduler.engine import phase_changes
from klt_scheduler.machine import Kind

S = KeptnState.SUCCEEDED
F = KeptnState.FAILED
P = KeptnState.PENDING
G = KeptnState.PROGRESSING
D = KeptnState.DEPRECATED
U = KeptnState.UNKNOWN
W = KeptnState.WARNING

states = st.sampled_from(list(KeptnState))


def _keptn_overall(items: list[KeptnState], total: int) -> KeptnState:
    """Keptn's StatusSummary + GetOverallState, transcribed literally as the oracle."""
    summary = Counter(items)
    if summary[F] > 0 or summary[D] > 0:
        return F
    if summary[G] > 0:
        return G
    if summary[P] > 0:
        return P
    if summary[U] > 0:
        return U
    counted = summary[F] + summary[S] + summary[G] + summary[P] + summary[U] + summary[D]
    if counted != total:
        return P
    return S


@given(st.lists(states, max_size=8), st.integers(min_value=0, max_value=10))
def test_overall_state_is_keptns_get_overall_state(items: list[KeptnState], extra: int) -> None:
    total = len(items) + extra
    assert machine.overall_state(items, total) is _keptn_overall(items, total)


@pytest.mark.parametrize(
    ("items", "total", "expected"),
    [
        pytest.param([], 0, S, id="no-definitions-succeeds"),
        pytest.param([S, S], 2, S, id="all-succeeded"),
        pytest.param([S], 2, P, id="a-missing-definition-keeps-it-pending"),
        pytest.param([S, F], 2, F, id="one-failure-fails"),
        pytest.param([G, D], 2, F, id="deprecated-counts-as-failed"),
        pytest.param([S, G], 2, G, id="progressing-before-pending"),
        pytest.param([P, U], 2, P, id="pending-before-unknown"),
        pytest.param([U, S], 2, U, id="unknown"),
        pytest.param([W], 1, P, id="warning-is-counted-nowhere-as-in-keptn"),
    ],
)
def test_overall_state_examples(items: list[KeptnState], total: int, expected: KeptnState) -> None:
    assert machine.overall_state(items, total) is expected


@given(states, st.booleans())
def test_non_blocking_mode_turns_only_failed_into_warning(state: KeptnState, block: bool) -> None:
    result = machine.blocked(state, block)
    if state is F and not block:
        assert result is W
    else:
        assert result is state


def test_the_app_phases_run_in_keptns_order() -> None:
    assert [s.phase for s in machine.app_phases(promotion_enabled=False)] == [
        "AppPreDeployTasks",
        "AppPreDeployEvaluations",
        "AppDeploy",
        "AppPostDeployTasks",
        "AppPostDeployEvaluations",
    ]
    assert [s.phase for s in machine.app_phases(promotion_enabled=True)][-1] == "PromotionTasks"


def test_the_workload_phases_run_in_keptns_order() -> None:
    assert [s.phase for s in machine.workload_phases()] == [
        "WorkloadPreDeployTasks",
        "WorkloadPreDeployEvaluations",
        "WorkloadDeploy",
        "WorkloadPostDeployTasks",
        "WorkloadPostDeployEvaluations",
    ]


def test_check_types_and_lists_match_their_phases() -> None:
    found = {
        s.phase: (s.check_type, s.definitions_field, s.items_field)
        for s in (*machine.app_phases(promotion_enabled=True), *machine.workload_phases())
        if s.check_type is not None
    }
    assert found[Phase.APP_PRE_DEPLOY_TASKS] == (
        "pre",
        "pre_deployment_tasks",
        "pre_deployment_task_status",
    )
    assert found[Phase.WORKLOAD_POST_DEPLOY_EVALUATIONS] == (
        "post-eval",
        "post_deployment_evaluations",
        "post_deployment_evaluation_task_status",
    )
    assert found[Phase.PROMOTION_TASKS] == ("promotion", "promotion_tasks", "promotion_task_status")


APP_FIELDS = (
    "pre_deployment_status",
    "pre_deployment_evaluation_status",
    "workload_overall_status",
    "post_deployment_status",
    "post_deployment_evaluation_status",
    "promotion_status",
)
WORKLOAD_FIELDS = (
    "pre_deployment_status",
    "pre_deployment_evaluation_status",
    "deployment_status",
    "post_deployment_status",
    "post_deployment_evaluation_status",
)


@pytest.mark.parametrize(
    ("phase", "deprecated"),
    [
        ("AppPreDeployTasks", APP_FIELDS[1:]),
        ("AppPreDeployEvaluations", APP_FIELDS[2:]),
        ("AppDeploy", APP_FIELDS[3:]),
        ("AppPostDeployTasks", APP_FIELDS[4:]),
        ("AppPostDeployEvaluations", APP_FIELDS[5:]),
        ("PromotionTasks", ()),
    ],
)
def test_a_failed_app_phase_deprecates_every_later_phase(
    phase: str, deprecated: tuple[str, ...]
) -> None:
    spec = machine.phase_spec(phase)
    assert spec is not None
    status = lifecycle.KeptnAppVersionStatus()
    machine.deprecate_remaining(status, spec)
    assert status.status is F
    assert {f for f in APP_FIELDS if getattr(status, f) is D} == set(deprecated)


@pytest.mark.parametrize(
    ("phase", "deprecated"),
    [
        ("WorkloadPreDeployTasks", WORKLOAD_FIELDS[1:]),
        ("WorkloadPreDeployEvaluations", WORKLOAD_FIELDS[2:]),
        ("WorkloadDeploy", WORKLOAD_FIELDS[3:]),
        ("WorkloadPostDeployTasks", WORKLOAD_FIELDS[4:]),
        ("WorkloadPostDeployEvaluations", ()),
    ],
)
def test_a_failed_workload_phase_deprecates_every_later_phase(
    phase: str, deprecated: tuple[str, ...]
) -> None:
    spec = machine.phase_spec(phase)
    assert spec is not None
    status = lifecycle.KeptnWorkloadVersionStatus()
    machine.deprecate_remaining(status, spec)
    assert status.status is F
    assert {f for f in WORKLOAD_FIELDS if getattr(status, f) is D} == set(deprecated)


def test_a_superseded_revision_is_deprecated_entirely() -> None:
    status = lifecycle.KeptnAppVersionStatus(pre_deployment_status=S, status=G)
    machine.deprecate_all(status)
    assert all(getattr(status, f) is D for f in APP_FIELDS)
    assert status.status is D
    assert machine.aborted(status)


@given(states, st.booleans())
def test_what_counts_as_passed(state: KeptnState, block: bool) -> None:
    tasks = machine.phase_spec("AppPreDeployTasks")
    deploy = machine.phase_spec("WorkloadDeploy")
    promotion = machine.phase_spec("PromotionTasks")
    assert tasks is not None
    assert deploy is not None
    assert promotion is not None
    assert machine.phase_passed(state, tasks, block_deployment=block) is (
        state is S or (state is W and not block)
    )
    assert machine.phase_passed(state, deploy, block_deployment=block) is (state is S)
    assert machine.phase_passed(state, promotion, block_deployment=block) is state.is_completed


@given(states, states, st.booleans())
def test_the_gate_opens_only_when_both_pre_deployment_checks_passed(
    pre: KeptnState, pre_eval: KeptnState, block: bool
) -> None:
    status = lifecycle.KeptnWorkloadVersionStatus(
        pre_deployment_status=pre, pre_deployment_evaluation_status=pre_eval
    )
    passed = {S} if block else {S, W}
    assert machine.gate_open(status, block_deployment=block) is (
        pre in passed and pre_eval in passed
    )


def test_a_failed_or_deprecated_pre_check_keeps_the_gate_unlike_keptn_3920() -> None:
    failed = lifecycle.KeptnWorkloadVersionStatus(
        pre_deployment_status=F, pre_deployment_evaluation_status=D, deployment_status=D
    )
    assert not machine.gate_open(failed, block_deployment=True)
    assert not machine.gate_open(failed, block_deployment=False)


@given(states, st.booleans())
def test_a_workload_starts_after_its_apps_pre_evaluations(state: KeptnState, block: bool) -> None:
    assert machine.app_pre_evaluations_passed(state, block_deployment=block) is (
        state is S or (state is W and not block)
    )


@pytest.mark.parametrize(
    ("kind", "state", "frozen"),
    [
        (Kind.TASKS, S, True),
        (Kind.TASKS, F, True),
        (Kind.TASKS, D, False),
        (Kind.TASKS, G, False),
        (Kind.EVALUATIONS, D, True),
        (Kind.EVALUATIONS, W, True),
        (Kind.EVALUATIONS, P, False),
    ],
)
def test_finished_items_are_frozen_as_in_keptns_handlers(
    kind: Kind, state: KeptnState, frozen: bool
) -> None:
    item = lifecycle.ItemStatus(definition_name="d", name="x", status=state)
    assert machine.frozen(item, kind) is frozen


_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@given(
    st.sampled_from(["pre", "post", "promotion", "pre-eval", "post-eval"]),
    st.from_regex(r"[a-z][a-z0-9-]{0,40}[a-z0-9]", fullmatch=True),
    st.uuids(),
    st.sampled_from(list(Phase)[:11]),
)
def test_check_names_are_deterministic_valid_and_keptn_shaped(
    check_type: str, definition: str, uid: object, phase: str
) -> None:
    name = machine.check_name(check_type, definition, str(uid), phase)
    assert name == machine.check_name(check_type, definition, str(uid), phase)
    assert name.startswith(f"{check_type}-{definition}-")
    assert len(name) <= 253
    assert _NAME.match(name)


def test_check_names_differ_per_parent_phase_and_definition() -> None:
    base = machine.check_name("pre", "smoke", "uid-1", "AppPreDeployTasks")
    assert base != machine.check_name("pre", "smoke", "uid-2", "AppPreDeployTasks")
    assert base != machine.check_name("pre", "smoke", "uid-1", "WorkloadPreDeployTasks")
    assert base != machine.check_name("pre", "smoke2", "uid-1", "AppPreDeployTasks")


def test_definitions_run_once_each_in_order() -> None:
    assert machine.unique(["b", "a", "b", "c", "a"]) == ["b", "a", "c"]
    assert machine.unique(None) == []


def test_workload_metadata_wins_over_the_apps() -> None:
    merged = machine.merge_metadata({"team": "app", "env": "prod"}, {"team": "web"}, None)
    assert merged == {"team": "web", "env": "prod"}


def test_long_phase_names_are_keptns() -> None:
    assert machine.long_name("AppPreDeployTasks") == "App Pre-Deployment Tasks"
    assert machine.long_name("WorkloadDeploy") == "Workload Deployment"
    assert machine.long_name("AppCompleted") == "App Completed"
    assert machine.long_name("ReconcileWorkload") == "Reconcile Workloads"


def test_phase_changes_list_every_transition_once() -> None:
    old = lifecycle.KeptnAppVersionStatus(current_phase="AppPreDeployTasks", status=G)
    new = lifecycle.KeptnAppVersionStatus(
        current_phase="AppDeploy",
        pre_deployment_status=S,
        pre_deployment_evaluation_status=S,
        workload_overall_status=G,
        status=G,
    )
    assert phase_changes(True, old, new) == [
        ("AppPreDeployTasks", S),
        ("AppPreDeployEvaluations", S),
        ("AppDeploy", G),
    ]
    done = new.model_copy(
        update={
            "current_phase": "Completed",
            "workload_overall_status": S,
            "post_deployment_status": S,
            "post_deployment_evaluation_status": S,
            "status": S,
        }
    )
    assert phase_changes(True, new, done)[-1] == ("Completed", S)
    assert phase_changes(True, done, done) == []


def test_entering_a_phase_is_announced_even_while_it_stays_pending() -> None:
    old = lifecycle.KeptnWorkloadVersionStatus()
    new = lifecycle.KeptnWorkloadVersionStatus(current_phase="WorkloadPreDeployTasks", status=G)
    assert phase_changes(False, old, new) == [("WorkloadPreDeployTasks", P)]
