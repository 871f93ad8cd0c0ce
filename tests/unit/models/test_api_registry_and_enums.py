"""The kind registry and the shared string enums."""

from __future__ import annotations

import dataclasses

import pytest

from klt_common.structs import api

EXPECTED = {
    # kind: (group, version, plural, short names)
    "KeptnApp": ("lifecycle.keptn.sh", "v1", "keptnapps", ()),
    "KeptnAppContext": ("lifecycle.keptn.sh", "v1", "keptnappcontexts", ()),
    "KeptnAppCreationRequest": ("lifecycle.keptn.sh", "v1", "keptnappcreationrequests", ()),
    "KeptnAppVersion": ("lifecycle.keptn.sh", "v1", "keptnappversions", ("kav",)),
    "KeptnWorkload": ("lifecycle.keptn.sh", "v1", "keptnworkloads", ()),
    "KeptnWorkloadVersion": ("lifecycle.keptn.sh", "v1", "keptnworkloadversions", ("kwv",)),
    "KeptnTaskDefinition": ("lifecycle.keptn.sh", "v1", "keptntaskdefinitions", ()),
    "KeptnTask": ("lifecycle.keptn.sh", "v1", "keptntasks", ()),
    "KeptnEvaluationDefinition": (
        "lifecycle.keptn.sh",
        "v1",
        "keptnevaluationdefinitions",
        ("ked",),
    ),
    "KeptnEvaluation": ("lifecycle.keptn.sh", "v1", "keptnevaluations", ("ke",)),
    "KeptnMetric": ("metrics.keptn.sh", "v1", "keptnmetrics", ()),
    "KeptnMetricsProvider": ("metrics.keptn.sh", "v1", "keptnmetricsproviders", ("kmp",)),
    "Analysis": ("metrics.keptn.sh", "v1", "analyses", ()),
    "AnalysisDefinition": ("metrics.keptn.sh", "v1", "analysisdefinitions", ()),
    "AnalysisValueTemplate": ("metrics.keptn.sh", "v1", "analysisvaluetemplates", ()),
    "KeptnConfig": ("options.keptn.sh", "v1alpha1", "keptnconfigs", ()),
}


def test_registry_holds_exactly_the_kinds_klt_reads_or_writes() -> None:
    found = {
        kind.kind: (kind.group, kind.version, kind.plural, kind.short_names)
        for kind in api.resource_kinds()
    }
    assert found == EXPECTED


@pytest.mark.parametrize("entry", api.resource_kinds(), ids=lambda entry: entry.kind)
def test_entry_is_consistent_with_its_model(entry: api.ResourceKind) -> None:
    assert entry.model.model_fields["kind"].default == entry.kind
    assert entry.api_version == entry.model.API_VERSION
    assert entry.model.model_fields["api_version"].default == entry.api_version
    assert entry.singular == entry.kind.lower()
    assert entry.crd_name == f"{entry.plural}.{entry.group}"
    assert entry.namespaced
    assert api.by_kind(entry.kind) is entry
    assert api.by_plural(entry.group, entry.plural) is entry
    assert entry.model.__name__ in api.__all__


def test_entries_are_frozen() -> None:
    entry = api.by_kind("KeptnApp")
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.plural = "apps"  # type: ignore[misc]


def test_short_names_are_unique() -> None:
    names = [name for entry in api.resource_kinds() for name in entry.short_names]
    assert len(names) == len(set(names))


@pytest.mark.parametrize(
    ("lookup", "args"),
    [
        (api.by_kind, ("Deployment",)),
        (api.by_kind, ("keptnapp",)),
        (api.by_plural, ("lifecycle.keptn.sh", "keptnworkloadinstances")),
        (api.by_plural, ("metrics.keptn.sh", "keptnapps")),
    ],
)
def test_unknown_lookups_raise(lookup: object, args: tuple[str, ...]) -> None:
    with pytest.raises(api.UnknownKindError):
        lookup(*args)  # type: ignore[operator]


def test_unknown_kind_error_is_a_lookup_error() -> None:
    assert issubclass(api.UnknownKindError, LookupError)


# --- enums -------------------------------------------------------------------------------------


def test_keptn_state_values_are_keptns() -> None:
    assert [state.value for state in api.KeptnState] == [
        "Pending",
        "Progressing",
        "Succeeded",
        "Failed",
        "Unknown",
        "Deprecated",
        "Warning",
    ]


@pytest.mark.parametrize(
    ("state", "completed"),
    [
        (api.KeptnState.PENDING, False),
        (api.KeptnState.PROGRESSING, False),
        (api.KeptnState.UNKNOWN, False),
        (api.KeptnState.SUCCEEDED, True),
        (api.KeptnState.FAILED, True),
        (api.KeptnState.DEPRECATED, True),
        (api.KeptnState.WARNING, True),
    ],
)
def test_keptn_state_is_completed(state: api.KeptnState, completed: bool) -> None:
    assert state.is_completed is completed


def test_keptn_state_predicates() -> None:
    assert api.KeptnState.SUCCEEDED.is_succeeded
    assert not api.KeptnState.WARNING.is_succeeded
    assert api.KeptnState.FAILED.is_failed
    assert api.KeptnState.PENDING.is_pending


def test_enums_compare_equal_to_their_wire_strings() -> None:
    assert api.KeptnState.PENDING == "Pending"
    assert api.CheckType.PRE_EVAL == "pre-eval"
    assert api.Phase.WORKLOAD_DEPLOY == "WorkloadDeploy"
    assert f"{api.CheckType.POST}-task" == "post-task"


def test_check_types_are_keptns() -> None:
    assert {check.value for check in api.CheckType} == {
        "pre",
        "post",
        "promotion",
        "pre-eval",
        "post-eval",
    }


def test_lifecycle_phases_are_in_order() -> None:
    lifecycle_phases = [phase.value for phase in api.Phase][:12]
    assert lifecycle_phases == [
        "AppPreDeployTasks",
        "AppPreDeployEvaluations",
        "AppDeploy",
        "AppPostDeployTasks",
        "AppPostDeployEvaluations",
        "PromotionTasks",
        "WorkloadPreDeployTasks",
        "WorkloadPreDeployEvaluations",
        "WorkloadDeploy",
        "WorkloadPostDeployTasks",
        "WorkloadPostDeployEvaluations",
        "Completed",
    ]


def test_analysis_state() -> None:
    assert [state.value for state in api.AnalysisState] == ["Pending", "Progressing", "Completed"]
    assert api.AnalysisState.COMPLETED.is_completed
    assert not api.AnalysisState.PROGRESSING.is_completed


def test_aggregations_are_keptns() -> None:
    assert {agg.value for agg in api.Aggregation} == {
        "p90",
        "p95",
        "p99",
        "max",
        "min",
        "avg",
        "median",
    }
