"""Each service's ServiceAccount is granted exactly what deploy/rbac-matrix.yaml lists.

For every value set and service: the grants the rendered chart makes (its Roles and
ClusterRoles, followed through the bindings that name the account) equal the matrix's needs for
those values, one verb, resource, scope and name at a time. Nothing more (a rule added to a
template without the matrix fails) and nothing less (a need the templates forgot fails). Also:

- no rule anywhere uses a wildcard or a non-resource URL;
- nobody may read Secrets cluster-wide; the task-runner reads none by default; the webhook only
  its certificate Secret; the evaluator only in the namespaces the values name;
- the matrix does not contradict itself: no ``mustNot`` entry is among its own needs.

tests/integration/chart asks the real apiserver the same questions (SubjectAccessReviews).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from chart_kit import (
    CLUSTER,
    SERVICES,
    Access,
    Grant,
    MatrixContext,
    Rendered,
    allowed,
    load_matrix,
    matrix_grants,
    must_not,
    rendered_grants,
)

Renders = Callable[[str], Rendered]


@pytest.mark.parametrize("service", SERVICES)
def test_each_account_is_granted_exactly_the_matrix(
    rendered_sets: Renders, value_set: str, service: str
) -> None:
    rendered = rendered_sets(value_set)
    context = MatrixContext.of(rendered)
    granted = rendered_grants(rendered, f"{rendered.prefix}-{service}")
    expected = matrix_grants(load_matrix(), service, context)
    extra, missing = sorted(granted - expected), sorted(expected - granted)
    assert not extra, f"{service} is granted more than deploy/rbac-matrix.yaml lists: {extra}"
    assert not missing, f"{service} lacks what deploy/rbac-matrix.yaml lists: {missing}"


def test_no_rule_uses_wildcards(rendered_sets: Renders, value_set: str) -> None:
    rendered = rendered_sets(value_set)
    for role in rendered.of_kind("ClusterRole") + rendered.of_kind("Role"):
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in rule.get(key, []), f"{role['metadata']['name']}: {rule}"
            assert "nonResourceURLs" not in rule


@pytest.mark.parametrize("service", SERVICES)
def test_nobody_reads_secrets_cluster_wide(
    rendered_sets: Renders, value_set: str, service: str
) -> None:
    rendered = rendered_sets(value_set)
    granted = rendered_grants(rendered, f"{rendered.prefix}-{service}")
    for verb in ("get", "list", "watch"):
        assert not allowed(granted, Access(verb, "", "secrets")), (service, verb)
    secret_grants = {g for g in granted if g.resource == "secrets"}
    assert all(g.scope != CLUSTER for g in secret_grants)
    assert not {g for g in secret_grants if g.verb in ("list", "watch", "create", "delete")}


def test_task_runner_reads_no_secrets_by_default(rendered_sets: Renders) -> None:
    granted = rendered_grants(rendered_sets("defaults"), "klt-task-runner")
    assert not {g for g in granted if g.resource == "secrets"}


def test_webhook_reads_only_its_certificate_secret(rendered_sets: Renders) -> None:
    granted = rendered_grants(rendered_sets("defaults"), "klt-webhook")
    assert {g for g in granted if g.resource == "secrets"} == {
        Grant("klt-system", "", "secrets", "get", "klt-certs"),
        Grant("klt-system", "", "secrets", "update", "klt-certs"),
    }
    with_cert_manager = rendered_grants(rendered_sets("cert-manager"), "klt-webhook")
    assert not {g for g in with_cert_manager if g.resource == "secrets"}
    assert not {g for g in with_cert_manager if g.group == "admissionregistration.k8s.io"}


def test_evaluator_reads_secrets_only_where_configured(rendered_sets: Renders) -> None:
    default = rendered_grants(rendered_sets("defaults"), "klt-evaluator")
    assert {g for g in default if g.resource == "secrets"} == {
        Grant("klt-system", "", "secrets", "get", None)
    }
    configured = rendered_grants(rendered_sets("secret-namespaces"), "klt-evaluator")
    assert {g for g in configured if g.resource == "secrets"} == {
        Grant(ns, "", "secrets", "get", "prom-token") for ns in ("klt-system", "default")
    }


@pytest.mark.parametrize("service", SERVICES)
def test_the_matrix_never_needs_what_it_forbids(rendered_sets: Renders, service: str) -> None:
    for value_set in ("defaults", "secret-namespaces"):
        context = MatrixContext.of(rendered_sets(value_set))
        needs = matrix_grants(load_matrix(), service, context)
        for access in must_not(load_matrix(), service, context):
            assert not allowed(needs, access), f"{service}: {access} is both needed and forbidden"


def test_the_matrix_covers_every_service_and_says_why() -> None:
    matrix = load_matrix()
    assert set(matrix["services"]) == set(SERVICES)
    for service, entry in matrix["services"].items():
        for need in entry["needs"]:
            assert need.get("why"), f"{service}: {need}"
        for rule in entry.get("mustNot", []):
            assert rule.get("why"), f"{service}: {rule}"
