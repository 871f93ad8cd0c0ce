"""The aggregator's pure rules: specs built from a workload identity, what counts as a change,
the version of an automatic app, the app context merge, the discovery deadline, the KeptnConfig
that counts, and the ids of the events it publishes."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from klt_app_aggregator import rules
from klt_common.structs import discovery as disc

OWNER = rules.Owner(api_version="apps/v1", kind="ReplicaSet", name="web-5d9f", uid="rs-uid")


def _identity(**changes: Any) -> rules.WorkloadIdentity:
    values: dict[str, Any] = {
        "namespace": "shop",
        "app": "store",
        "workload": "store-web",
        "version": "1.0",
        "owner": OWNER,
        "single_service": False,
        "pre_deployment_tasks": ("notify",),
        "metadata": {"team": "a"},
    }
    values.update(changes)
    return rules.WorkloadIdentity(**values)


def _obj(kind: str, name: str, spec: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "lifecycle.keptn.sh/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": "shop", "uid": f"{name}-uid", **meta},
        "spec": spec,
    }


def _workload(name: str, version: str, app: str = "store") -> dict[str, Any]:
    return _obj("KeptnWorkload", name, {"app": app, "version": version})


# --- KeptnWorkload -------------------------------------------------------------------------------


def test_a_workload_spec_carries_the_identity_and_omits_empty_lists() -> None:
    assert rules.workload_spec(_identity()) == {
        "app": "store",
        "version": "1.0",
        "preDeploymentTasks": ["notify"],
        "resourceReference": {"uid": "rs-uid", "kind": "ReplicaSet", "name": "web-5d9f"},
        "metadata": {"team": "a"},
    }


def test_a_workload_is_owned_by_the_pods_owner() -> None:
    body = rules.workload_body(_identity())
    assert body["metadata"]["name"] == "store-web"
    assert body["metadata"]["ownerReferences"] == [
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d9f", "uid": "rs-uid"}
    ]


@pytest.mark.parametrize(
    ("change", "differs"),
    [
        pytest.param({}, False, id="same"),
        pytest.param({"version": "2.0"}, True, id="version"),
        pytest.param({"post_deployment_tasks": ("x",)}, True, id="checks"),
        pytest.param({"metadata": {}}, True, id="metadata"),
        pytest.param(
            {"owner": rules.Owner("apps/v1", "ReplicaSet", "web-6", "rs2")}, True, id="owner"
        ),
    ],
)
def test_a_workload_is_rewritten_only_when_its_spec_or_owners_differ(
    change: dict[str, Any], differs: bool
) -> None:
    stored = rules.workload_body(_identity())
    # What the apiserver hands back: empty lists written explicitly, extra metadata.
    stored["spec"]["postDeploymentTasks"] = []
    stored["metadata"]["resourceVersion"] = "7"
    stored["status"] = {"currentVersion": "1.0"}
    assert rules.workload_differs(stored, _identity(**change)) is differs


def test_applying_an_identity_keeps_everything_else() -> None:
    stored = rules.workload_body(_identity())
    stored["metadata"]["labels"] = {"keep": "me"}
    updated = rules.apply_workload(stored, _identity(version="2.0"))
    assert updated["spec"]["version"] == "2.0"
    assert updated["metadata"]["labels"] == {"keep": "me"}


# --- KeptnWorkloadVersion ------------------------------------------------------------------------


def test_a_workload_version_copies_the_workload_and_names_the_previous_version() -> None:
    workload = rules.workload_body(_identity(version="2.0_1"))
    workload["metadata"]["uid"] = "kw-uid"
    workload["status"] = {"currentVersion": "1.0"}
    body = rules.workload_version_body(workload)
    assert body["metadata"]["name"] == "store-web-2.0-1"
    assert body["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "lifecycle.keptn.sh/v1",
            "kind": "KeptnWorkload",
            "name": "store-web",
            "uid": "kw-uid",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert body["spec"] == {
        **rules.workload_spec(_identity(version="2.0_1")),
        "workloadName": "store-web",
        "previousVersion": "1.0",
    }


@pytest.mark.parametrize("current", [None, "1.0"])
def test_there_is_no_previous_version_when_the_current_one_is_the_same_or_unknown(
    current: str | None,
) -> None:
    workload = rules.workload_body(_identity(version="1.0"))
    if current:
        workload["status"] = {"currentVersion": current}
    assert "previousVersion" not in rules.workload_version_body(workload)["spec"]


def test_a_changed_workload_spec_is_copied_into_its_version_keeping_its_own_fields() -> None:
    workload = rules.workload_body(_identity())
    kwv = rules.workload_version_body(workload)
    kwv["spec"]["previousVersion"] = "0.9"
    kwv["spec"]["traceId"] = {"traceparent": "00-x"}
    assert not rules.workload_version_differs(kwv, workload)
    changed = rules.workload_body(_identity(pre_deployment_tasks=("notify", "backup")))
    assert rules.workload_version_differs(kwv, changed)
    updated = rules.apply_workload_spec(kwv, changed)
    assert updated["spec"]["preDeploymentTasks"] == ["notify", "backup"]
    assert updated["spec"]["workloadName"] == "store-web"
    assert updated["spec"]["previousVersion"] == "0.9"
    assert updated["spec"]["traceId"] == {"traceparent": "00-x"}


# --- KeptnAppCreationRequest and the window ------------------------------------------------------


def test_a_single_service_request_is_annotated_and_carries_the_trace() -> None:
    body = rules.creation_request_body(
        _identity(single_service=True), {"traceparent": "00-abc-def-01"}
    )
    assert body["metadata"] == {
        "name": "store",
        "namespace": "shop",
        "annotations": {"traceparent": "00-abc-def-01", disc.APP_TYPE: disc.SINGLE_SERVICE},
    }
    assert body["spec"] == {"appName": "store"}
    assert rules.is_single_service(body)
    assert not rules.is_single_service(rules.creation_request_body(_identity(), {}))


CREATED = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("single", "user_owned", "expected"),
    [
        pytest.param(False, False, CREATED + timedelta(seconds=30), id="multi-service"),
        pytest.param(True, False, CREATED, id="single-service-at-once"),
        pytest.param(False, True, CREATED, id="users-app-at-once"),
    ],
)
def test_the_deadline_is_derived_from_the_creation_timestamp(
    single: bool, user_owned: bool, expected: datetime
) -> None:
    deadline = rules.creation_deadline(
        CREATED, single_service=single, user_owned_app=user_owned, timeout_seconds=30
    )
    assert deadline == expected


def _config(name: str, rv: str, timeout: Any = None) -> dict[str, Any]:
    spec = {} if timeout is None else {"keptnAppCreationRequestTimeoutSeconds": timeout}
    return {"metadata": {"name": name, "resourceVersion": rv}, "spec": spec}


@pytest.mark.parametrize(
    ("configs", "name", "expected"),
    [
        pytest.param([], None, 30.0, id="none-default"),
        pytest.param([_config("a", "5", 10)], None, 10.0, id="one"),
        pytest.param([_config("a", "5", 10), _config("b", "9", 20)], None, 20.0, id="last-wins"),
        pytest.param(
            [_config("a", "50", 10), _config("b", "9", 20)], None, 10.0, id="by-rv-number"
        ),
        pytest.param([_config("a", "5", 10), _config("b", "9", 20)], "a", 10.0, id="by-name"),
        pytest.param([_config("b", "9", 20)], "a", 30.0, id="name-missing"),
        pytest.param([_config("a", "5", 10), _config("b", "9")], None, 10.0, id="unset-skipped"),
        pytest.param([_config("a", "5", -1), _config("b", "4", "x")], None, 30.0, id="invalid"),
        pytest.param([_config("a", "5", 0)], None, 0.0, id="zero-is-valid"),
    ],
)
def test_the_last_written_keptn_config_sets_the_window(
    configs: list[dict[str, Any]], name: str | None, expected: float
) -> None:
    assert rules.creation_request_timeout(configs, name=name, default=30.0) == expected


# --- KeptnApp -----------------------------------------------------------------------------------


def test_an_automatic_app_lists_its_workloads_by_short_name_sorted() -> None:
    workloads = [_workload("store-web", "1.0"), _workload("store-api", "2.0")]
    assert rules.app_workloads("store", workloads) == [
        {"name": "api", "version": "2.0"},
        {"name": "web", "version": "1.0"},
    ]


def test_the_version_of_a_single_workload_app_is_the_workloads() -> None:
    assert rules.app_version_rule([_workload("store-web", "1.0")]) == "1.0"


def test_the_version_of_a_multi_workload_app_hashes_names_and_versions_in_name_order() -> None:
    workloads = [_workload("store-web", "1.0"), _workload("store-api", "2.0")]
    expected = hashlib.sha256(b"store-api-2.0store-web-1.0").hexdigest()[:10]
    assert rules.app_version_rule(workloads) == expected
    assert rules.app_version_rule(list(reversed(workloads))) == expected


def test_a_new_app_is_managed_and_keeps_the_requests_annotations() -> None:
    request = rules.creation_request_body(_identity(single_service=True), {"traceparent": "t"})
    app = rules.app_body(request, [_workload("store-web", "1.0")])
    assert app["metadata"]["labels"] == {disc.MANAGED_BY_LABEL: "keptn"}
    assert app["metadata"]["annotations"] == request["metadata"]["annotations"]
    assert app["spec"] == {"version": "1.0", "workloads": [{"name": "web", "version": "1.0"}]}
    assert rules.is_managed(app)


@pytest.mark.parametrize(
    ("labels", "managed"),
    [({disc.MANAGED_BY_LABEL: "keptn"}, True), ({disc.MANAGED_BY_LABEL: "klt"}, True), ({}, False)],
)
def test_only_apps_labelled_managed_by_keptn_are_the_aggregators(
    labels: dict[str, str], managed: bool
) -> None:
    assert rules.is_managed({"metadata": {"labels": labels}}) is managed


def test_an_app_differs_on_versions_and_membership_but_not_on_order() -> None:
    workloads = [_workload("store-web", "1.0"), _workload("store-api", "2.0")]
    app = _obj(
        "KeptnApp",
        "store",
        {
            "version": rules.app_version_rule(workloads),
            "workloads": [{"name": "web", "version": "1.0"}, {"name": "api", "version": "2.0"}],
        },
    )
    assert not rules.app_differs(app, workloads)
    assert rules.app_differs(app, [*workloads, _workload("store-db", "1")])
    assert rules.app_differs(app, [_workload("store-web", "1.1"), workloads[1]])
    assert rules.app_differs(app, workloads[:1])
    assert rules.uncovered(app, [*workloads, _workload("store-db", "1")]) == [
        {"name": "db", "version": "1"}
    ]
    updated = rules.apply_app(app, [*workloads, _workload("store-db", "1")])
    assert [w["name"] for w in updated["spec"]["workloads"]] == ["api", "db", "web"]


def test_an_app_covers_a_workload_at_its_version() -> None:
    app = _obj(
        "KeptnApp", "store", {"version": "1", "workloads": [{"name": "web", "version": "1.0"}]}
    )
    assert rules.app_covers(app, _identity())
    assert not rules.app_covers(app, _identity(version="1.1"))


# --- KeptnAppVersion -----------------------------------------------------------------------------


def _app(generation: int = 1, current: str | None = None) -> dict[str, Any]:
    app = _obj(
        "KeptnApp",
        "store",
        {"version": "2.0", "revision": 3, "workloads": [{"name": "web", "version": "2.0"}]},
        generation=generation,
    )
    if current:
        app["status"] = {"currentVersion": current}
    return app


def test_an_app_version_is_named_by_version_and_generation_hash() -> None:
    assert rules.app_version_name(_app()) == "store-2.0-6b86b273"
    assert rules.app_version_name(_app(generation=2)) == "store-2.0-d4735e3a"
    assert rules.older_app_version_names(_app(generation=3)) == {
        "store-2.0-6b86b273",
        "store-2.0-d4735e3a",
    }
    assert rules.older_app_version_names(_app()) == set()


def _context(spec: dict[str, Any]) -> dict[str, Any]:
    return _obj("KeptnAppContext", "store", spec)


def test_the_app_context_is_merged_into_the_app_version() -> None:
    context = rules.context_spec(
        _context(
            {
                "preDeploymentTasks": ["notify"],
                "postDeploymentEvaluations": ["slo"],
                "promotionTasks": ["promote"],
                "metadata": {"stage": "dev"},
                "spanLinks": ["00-a-b-01"],
                "postDeploymentTasks": [],
            }
        )
    )
    body = rules.app_version_body(_app(current="1.0"), context)
    assert body["spec"] == {
        "appName": "store",
        "version": "2.0",
        "revision": 3,
        "workloads": [{"name": "web", "version": "2.0"}],
        "preDeploymentTasks": ["notify"],
        "postDeploymentEvaluations": ["slo"],
        "promotionTasks": ["promote"],
        "metadata": {"stage": "dev"},
        "spanLinks": ["00-a-b-01"],
        "previousVersion": "1.0",
    }
    assert body["metadata"]["ownerReferences"][0]["kind"] == "KeptnApp"
    assert body["metadata"]["ownerReferences"][0]["controller"] is True


def test_no_context_means_the_app_spec_alone() -> None:
    body = rules.app_version_body(_app(current="2.0"), rules.context_spec(None))
    assert body["spec"] == {
        "appName": "store",
        "version": "2.0",
        "revision": 3,
        "workloads": [{"name": "web", "version": "2.0"}],
    }


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param({"preDeploymentTasks": "notify"}, id="string-for-a-list"),
        pytest.param({"metadata": {"replicas": 3}}, id="number-for-a-string"),
        pytest.param({"spanLinks": [{"traceparent": "x"}]}, id="object-for-a-string"),
    ],
)
def test_a_context_that_is_not_one_is_bad_input_with_a_message(spec: dict[str, Any]) -> None:
    with pytest.raises(rules.BadInput, match="KeptnAppContext store cannot be read: spec"):
        rules.context_spec(_context(spec))


def test_deprecating_sets_every_phase_and_the_overall_state() -> None:
    kav = {"status": {"currentPhase": "AppDeploy", "status": "Progressing"}}
    deprecated = rules.deprecate(kav)
    assert deprecated["status"]["currentPhase"] == "AppDeploy"
    assert all(deprecated["status"][k] == "Deprecated" for k in rules.DEPRECATED_STATUS_KEYS)
    assert rules.is_deprecated(deprecated)


# --- published events ----------------------------------------------------------------------------


def test_event_ids_are_fixed_by_the_object_and_its_uid() -> None:
    kav = _obj("KeptnAppVersion", "store-2.0-6b86b273", {})
    same = rules.event_id("sh.klt.appversion.created", kav)
    assert same == rules.event_id("sh.klt.appversion.created", kav)
    recreated = _obj("KeptnAppVersion", "store-2.0-6b86b273", {}, uid="other")
    assert rules.event_id("sh.klt.appversion.created", recreated) != same
    assert rules.event_id("sh.klt.workloadversion.created", kav) != same


def test_a_version_counts_as_announced_once_the_scheduler_wrote_its_status() -> None:
    assert not rules.announced({"metadata": {}})
    assert rules.announced({"status": {"currentPhase": "AppPreDeployTasks"}})
