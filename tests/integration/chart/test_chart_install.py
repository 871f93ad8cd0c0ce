"""A real install of the chart, and what each service's ServiceAccount may then do.

The chart is rendered with its default values and really applied (server-side) into a dedicated
release namespace, then deleted again. Three values differ from the defaults, so that the
install cannot disturb the shared dev stack and so that one more scope is exercised:

- ``webhook.failurePolicy: Ignore`` and ``webhook.allowedNamespaces: [<release namespace>]``:
  the chart's webhook pods cannot really run here (the node agent only pretends to run unknown
  images), so no other namespace's admission may depend on them; the pod webhook excludes the
  release namespace anyway, and the validating webhook sees only objects created there;
- ``evaluator.secretAccess.namespaces: [<second namespace>]``: Secret access in a namespace the
  values name, next to the default release namespace.

The CRDs are not applied: the stack already serves deploy/crds (with its own conversion URL) and
other tests' objects live in them. Every object name is the release's, so nothing of the stack's
own (its webhook configurations, say) is touched; a test checks that. Cluster-scoped objects
are deleted by name afterwards, and the namespaces with everything in them.

Then, for each service, SubjectAccessReviews for ``system:serviceaccount:<ns>:<account>`` (with
the groups a ServiceAccount token carries) ask the apiserver about every need in
deploy/rbac-matrix.yaml, about each need widened by one step (all namespaces, another
namespace, another name, every other verb), and about every ``mustNot`` entry. Each answer must
be what the matrix predicts: it can do what it needs, and nothing broader.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from chart_kit import (
    SERVICES,
    Access,
    MatrixContext,
    Rendered,
    allowed,
    load_matrix,
    matrix_grants,
    must_not,
    probes,
    render,
)
from kube_kit import CLUSTER_SCOPED, Kubectl

from klt_common.clients import cluster as k8s

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

MANAGER = "klt-chart-test"


@dataclass(frozen=True)
class Installed:
    rendered: Rendered
    namespace: str
    other_namespace: str


@pytest.fixture(scope="module")
def kubectl(kubectl_bin: Path, kubeconfig: str) -> Kubectl:
    return Kubectl(kubectl_bin, kubeconfig)


@pytest.fixture(scope="module")
def stack_objects_before(kubectl: Kubectl) -> dict[str, str]:
    """resourceVersions of the stack's own webhook configurations and CRDs."""
    return _stack_objects(kubectl)


def _stack_objects(kubectl: Kubectl) -> dict[str, str]:
    found: dict[str, str] = {}
    for kind in (
        "mutatingwebhookconfigurations",
        "validatingwebhookconfigurations",
        "customresourcedefinitions",
    ):
        listed = kubectl.get_json(kind)
        assert listed is not None
        for item in listed["items"]:
            managers = {m.get("manager") for m in item["metadata"].get("managedFields", [])}
            found[f"{kind}/{item['metadata']['name']}"] = ",".join(sorted(filter(None, managers)))
    return found


@pytest.fixture(scope="module")
def installed(
    helm_bin: Path, kubectl: Kubectl, stack_objects_before: dict[str, str]
) -> Iterator[Installed]:
    release = f"klt-ct-{uuid.uuid4().hex[:8]}"
    other = f"{release}-other"
    rendered = render(
        helm_bin,
        {
            "webhook": {"failurePolicy": "Ignore", "allowedNamespaces": [release]},
            "evaluator": {"secretAccess": {"namespaces": [other]}},
        },
        release=release,
        namespace=release,
    )
    cluster_scoped = [
        d
        for d in rendered.docs
        if d["kind"] in CLUSTER_SCOPED and d["kind"] != "CustomResourceDefinition"
    ]
    to_apply = [d for d in rendered.docs if d["kind"] != "CustomResourceDefinition"]
    for doc in cluster_scoped:
        assert doc["metadata"]["name"].startswith(release), (
            f"{doc['kind']} {doc['metadata']['name']} would not be the release's own"
        )
    kubectl.run("create", "namespace", release)
    kubectl.run("create", "namespace", other)
    try:
        kubectl.apply(to_apply, dry_run=False, manager=MANAGER)
        yield Installed(rendered, release, other)
    finally:
        for doc in cluster_scoped:
            kubectl.run(
                "delete",
                doc["kind"].lower(),
                doc["metadata"]["name"],
                "--ignore-not-found",
                check=False,
            )
        for namespace in (release, other):
            kubectl.run("delete", "namespace", namespace, "--ignore-not-found", "--wait=false")


def test_the_install_creates_every_object(installed: Installed, kubectl: Kubectl) -> None:
    for doc in installed.rendered.docs:
        if doc["kind"] == "CustomResourceDefinition":
            continue
        args = [doc["kind"].lower(), doc["metadata"]["name"]]
        if doc["kind"] not in CLUSTER_SCOPED:
            args += ["-n", doc["metadata"]["namespace"]]
        live = kubectl.get_json(*args)
        assert live is not None, f"{args} was not created"
        managers = {m.get("manager") for m in live["metadata"]["managedFields"]}
        assert MANAGER in managers


def test_the_services_roll_out(installed: Installed, kubectl: Kubectl) -> None:
    """The node agent reports pods of unknown images Running and Ready, so the Deployments
    (service accounts, probes, security contexts and all) become available."""
    prefix = installed.rendered.prefix
    deadline = time.monotonic() + 120
    pending = {f"{prefix}-{s}" for s in SERVICES}
    while pending and time.monotonic() < deadline:
        for name in sorted(pending):
            live = kubectl.get_json("deployment", name, "-n", installed.namespace)
            assert live is not None
            want = live["spec"]["replicas"]
            if live.get("status", {}).get("availableReplicas", 0) >= want:
                pending.discard(name)
        time.sleep(1)
    assert not pending, f"not available after 2 minutes: {sorted(pending)}"


def test_the_webhook_configurations_cannot_block_anyone_else(
    installed: Installed, kubectl: Kubectl
) -> None:
    prefix = installed.rendered.prefix
    for kind, name in (
        ("mutatingwebhookconfiguration", f"{prefix}-mutating-webhook"),
        ("validatingwebhookconfiguration", f"{prefix}-validating-webhook"),
    ):
        live = kubectl.get_json(kind, name)
        assert live is not None
        for webhook in live["webhooks"]:
            assert webhook["failurePolicy"] == "Ignore"
            allow = [
                e for e in webhook["namespaceSelector"]["matchExpressions"] if e["operator"] == "In"
            ]
            assert allow == [
                {
                    "key": "kubernetes.io/metadata.name",
                    "operator": "In",
                    "values": [installed.namespace],
                }
            ]


def test_the_stacks_own_objects_are_untouched(
    installed: Installed, kubectl: Kubectl, stack_objects_before: dict[str, str]
) -> None:
    after = _stack_objects(kubectl)
    for key, managers in stack_objects_before.items():
        assert MANAGER not in managers
        assert MANAGER not in after.get(key, ""), f"{key} was written by the chart test"


async def _review(cluster: k8s.ClusterClient, namespace: str, account: str, access: Access) -> bool:
    body = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": f"system:serviceaccount:{namespace}:{account}",
            # What a ServiceAccount token carries, so group bindings count as they would.
            "groups": [
                "system:serviceaccounts",
                f"system:serviceaccounts:{namespace}",
                "system:authenticated",
            ],
            "resourceAttributes": access.attributes(),
        },
    }
    answer = await cluster.request(
        "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", body=body
    )
    return bool(answer.get("status", {}).get("allowed", False))


@pytest.mark.parametrize("service", SERVICES)
async def test_each_account_can_do_what_it_needs_and_nothing_broader(
    installed: Installed, cluster: k8s.ClusterClient, service: str
) -> None:
    rendered = installed.rendered
    account = f"{rendered.prefix}-{service}"
    context = MatrixContext.of(rendered)
    matrix = load_matrix()
    needs = matrix_grants(matrix, service, context)
    assert needs
    forbidden = must_not(matrix, service, context)
    for access in forbidden:
        assert not allowed(needs, access), f"the matrix both needs and forbids {access}"
    questions = sorted(probes(needs, other_namespace="default") | set(forbidden))
    limit = asyncio.Semaphore(32)

    async def ask(access: Access) -> tuple[Access, bool]:
        async with limit:
            return access, await _review(cluster, installed.namespace, account, access)

    answers = await asyncio.gather(*(ask(q) for q in questions))
    wrong = [
        f"{'allowed' if got else 'denied'} but expected {'allowed' if not got else 'denied'}: "
        f"{access}"
        for access, got in answers
        if got != allowed(needs, access)
    ]
    assert not wrong, f"{service} ({len(questions)} reviews):\n" + "\n".join(wrong)
    granted = sum(1 for _, got in answers if got)
    assert granted >= len({(g.group, g.resource, g.verb) for g in needs}) // 2


async def test_secrets_are_readable_only_where_the_values_say(
    installed: Installed, cluster: k8s.ClusterClient
) -> None:
    prefix, ns, other = installed.rendered.prefix, installed.namespace, installed.other_namespace
    cases = [
        ("evaluator", Access("get", "", "secrets", ns, "provider-token"), True),
        ("evaluator", Access("get", "", "secrets", other, "provider-token"), True),
        ("evaluator", Access("get", "", "secrets", "default", "provider-token"), False),
        ("evaluator", Access("list", "", "secrets", other), False),
        ("task-runner", Access("get", "", "secrets", ns, "anything"), False),
        ("task-runner", Access("get", "", "secrets", other, "anything"), False),
        ("webhook", Access("get", "", "secrets", ns, "klt-certs"), True),
        ("webhook", Access("update", "", "secrets", ns, "klt-certs"), True),
        ("webhook", Access("get", "", "secrets", ns, "another"), False),
        ("scheduler", Access("get", "", "secrets", ns, "klt-certs"), False),
        ("app-aggregator", Access("get", "", "secrets", ns, "klt-certs"), False),
    ]
    for service, access, expected in cases:
        got = await _review(cluster, ns, f"{prefix}-{service}", access)
        assert got is expected, f"{service}: {access}"
