"""Helpers for the chart tests: rendering with helm, the value sets, and the RBAC model.

The RBAC model turns both sides of the contract into one comparable form, a set of
:class:`Grant` (one verb on one resource, in one scope, optionally for one name):

- :func:`rendered_grants` reads what the rendered chart grants a ServiceAccount, following its
  RoleBindings and ClusterRoleBindings to the rules of the roles they reference;
- :func:`matrix_grants` expands ``deploy/rbac-matrix.yaml`` for the same values.

:func:`allowed` answers an access question from a grant set the way RBAC does, so the
integration tests can predict every SubjectAccessReview they send.

Shared with ``tests/integration/chart`` (its conftest puts this directory on ``sys.path``).
"""

from __future__ import annotations

import copy
import functools
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from klt_cli.devstack import paths, versions

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "deploy" / "charts" / "klt"
CRD_DIR = REPO / "deploy" / "crds"
MATRIX = REPO / "deploy" / "rbac-matrix.yaml"
KUBE_VERSION = versions.K8S_VERSION

SERVICES = ("webhook", "app-aggregator", "task-runner", "evaluator", "scheduler")
# Service -> its key in the umbrella chart's values.
VALUES_KEY = {
    "webhook": "webhook",
    "app-aggregator": "appAggregator",
    "task-runner": "taskRunner",
    "evaluator": "evaluator",
    "scheduler": "scheduler",
}
CONSUMERS = ("app-aggregator", "task-runner", "evaluator", "scheduler")

# libyaml when PyYAML has it: the rendered chart holds 160 kB of CRDs.
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# Kinds whose CRDs the dev stack does not install; tests validate them with foreign_kinds.py.
FOREIGN_GROUPS = ("keda.sh", "monitoring.coreos.com", "cert-manager.io")


def helm_binary() -> Path | None:
    """helm from PATH, else the one `klt dev build` put in the stack's bin dir."""
    found = shutil.which("helm")
    if found:
        return Path(found)
    candidate = paths.bin_dir() / "helm"
    return candidate if candidate.exists() else None


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def default_values() -> dict[str, Any]:
    loaded = yaml.safe_load((CHART / "values.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def all_on(service_keys: Iterable[str], section: str, extra: Mapping[str, Any]) -> dict[str, Any]:
    return {key: {section: {"enabled": True, **extra}} for key in service_keys}


# The value sets every render-level test runs over: each turns one feature on.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "bundled-kafka": {"global": {"kafka": {"bundled": True, "topicPrefix": "prod."}}},
    "cert-manager": {"global": {"certManager": {"enabled": True}}},
    "cert-manager-issuer": {
        "global": {"certManager": {"enabled": True}},
        "webhook": {"certManager": {"issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"}}},
    },
    "hpa-and-keda": deep_merge(
        all_on(VALUES_KEY.values(), "autoscaling", {"maxReplicas": 4}),
        all_on((VALUES_KEY[s] for s in CONSUMERS), "keda", {"maxReplicas": 6}),
    ),
    "hpa-only": all_on(VALUES_KEY.values(), "autoscaling", {}),
    "keda-only": all_on((VALUES_KEY[s] for s in CONSUMERS), "keda", {}),
    "allowed-namespaces": {"webhook": {"allowedNamespaces": ["team-b", "team-a"]}},
    "denied-namespaces": {"webhook": {"deniedNamespaces": ["legacy", "sandbox"]}},
    "failure-policy-ignore": {"webhook": {"failurePolicy": "Ignore", "timeoutSeconds": 3}},
    "observability-on": {
        "global": {
            "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
            "networkPolicy": {
                "enabled": True,
                "metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
                "egress": {"enabled": True, "apiServer": {"cidrs": ["10.0.0.1/32"]}},
            },
        },
        "dashboards": {"enabled": True},
    },
    "secret-namespaces": {
        "evaluator": {"secretAccess": {"namespaces": ["default"], "secretNames": ["prom-token"]}},
        "taskRunner": {"secretAccess": {"namespaces": ["default"]}},
    },
}


@dataclass
class Rendered:
    """The objects one `helm template` produced."""

    docs: list[dict[str, Any]]
    values: dict[str, Any] = field(default_factory=dict)
    release: str = "klt"
    namespace: str = "klt-system"

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d.get("kind") == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found = [d for d in self.of_kind(kind) if d["metadata"]["name"] == name]
        assert len(found) == 1, f"{len(found)} {kind} named {name}"
        return found[0]

    def names(self, kind: str) -> set[str]:
        return {d["metadata"]["name"] for d in self.of_kind(kind)}

    @property
    def prefix(self) -> str:
        return name_prefix(self.release, self.values)

    def deployment(self, service: str) -> dict[str, Any]:
        return self.get("Deployment", f"{self.prefix}-{service}")

    def env(self, service: str) -> dict[str, str]:
        """The service container's environment; fieldRef values read as a pod name would."""
        container = self.deployment(service)["spec"]["template"]["spec"]["containers"][0]
        env: dict[str, str] = {}
        for item in container.get("env", []):
            env[item["name"]] = item.get("value", "pod-0")
        return env


def name_prefix(release: str, values: Mapping[str, Any]) -> str:
    """klt-lib's "klt.fullname", in Python."""
    override = values.get("global", {}).get("fullnameOverride") or ""
    if override:
        name = override
    elif "klt" in release:
        name = release
    else:
        name = f"{release}-klt"
    return name[:40].rstrip("-")


class HelmError(AssertionError):
    pass


def helm(helm_bin: Path, *args: str, timeout: float = 120) -> str:
    out = subprocess.run(
        [str(helm_bin), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if out.returncode != 0:
        raise HelmError(f"helm {' '.join(args)} failed ({out.returncode}):\n{out.stderr}")
    return out.stdout


def render(
    helm_bin: Path,
    overrides: Mapping[str, Any] | None = None,
    *,
    release: str = "klt",
    namespace: str = "klt-system",
) -> Rendered:
    """`helm template` of the umbrella chart with ``overrides`` on top of its defaults."""
    overrides = dict(overrides or {})
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as values_file:
        yaml.safe_dump(overrides, values_file)
        values_file.flush()
        text = helm(
            helm_bin,
            "template",
            release,
            str(CHART),
            "--namespace",
            namespace,
            "--kube-version",
            KUBE_VERSION,
            "--values",
            values_file.name,
        )
    docs = [d for d in yaml.load_all(text, Loader=_LOADER) if d]
    return Rendered(
        docs=docs,
        values=deep_merge(default_values(), overrides),
        release=release,
        namespace=namespace,
    )


# --- CRDs -------------------------------------------------------------------------------------


def crd_files() -> list[Path]:
    return sorted(CRD_DIR.glob("*.yaml"))


def crds_from_files() -> dict[str, dict[str, Any]]:
    return copy.deepcopy(_crds_from_files())


@functools.cache
def _crds_from_files() -> dict[str, dict[str, Any]]:
    crds = {}
    for path in crd_files():
        doc = yaml.load(path.read_text(), Loader=_LOADER)
        crds[doc["metadata"]["name"]] = doc
    return crds


@functools.cache
def multi_version_crds() -> list[str]:
    return sorted(
        name
        for name, crd in crds_from_files().items()
        if sum(1 for v in crd["spec"]["versions"] if v.get("served")) > 1
    )


# --- RBAC ---------------------------------------------------------------------------------------

CLUSTER = "*cluster*"
"""The scope of a grant made by a ClusterRoleBinding (every namespace, and cluster-scoped kinds)."""


@dataclass(frozen=True, order=True)
class Grant:
    """One verb on one resource (``kind`` or ``kind/subresource``) in one scope."""

    scope: str
    """CLUSTER, or the namespace a RoleBinding grants it in."""
    group: str
    resource: str
    verb: str
    name: str | None = None
    """The one object it is limited to (resourceNames), or None for any."""


def _expand_rules(rules: Iterable[Mapping[str, Any]], scope: str) -> Iterator[Grant]:
    for rule in rules:
        assert not rule.get("nonResourceURLs"), "klt services need no non-resource URLs"
        names = rule.get("resourceNames") or [None]
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    for name in names:
                        yield Grant(scope, group, resource, verb, name)


def rendered_grants(rendered: Rendered, account: str) -> set[Grant]:
    """What the rendered chart lets ServiceAccount ``account`` (in the release namespace) do."""
    roles = {
        ("ClusterRole", None, d["metadata"]["name"]): d for d in rendered.of_kind("ClusterRole")
    }
    roles.update(
        {
            ("Role", d["metadata"]["namespace"], d["metadata"]["name"]): d
            for d in rendered.of_kind("Role")
        }
    )
    grants: set[Grant] = set()
    for binding in rendered.of_kind("ClusterRoleBinding") + rendered.of_kind("RoleBinding"):
        subjects = binding.get("subjects") or []
        if not any(
            s["kind"] == "ServiceAccount"
            and s["name"] == account
            and s["namespace"] == rendered.namespace
            for s in subjects
        ):
            continue
        ref = binding["roleRef"]
        if binding["kind"] == "ClusterRoleBinding":
            scope = CLUSTER
            role = roles[("ClusterRole", None, ref["name"])]
        else:
            scope = binding["metadata"]["namespace"]
            key = (
                ("Role", scope, ref["name"])
                if ref["kind"] == "Role"
                else (
                    "ClusterRole",
                    None,
                    ref["name"],
                )
            )
            role = roles[key]
        grants.update(_expand_rules(role.get("rules") or [], scope))
    return grants


@dataclass(frozen=True)
class MatrixContext:
    """What the matrix's conditions and placeholders mean for one set of values."""

    release_namespace: str
    self_managed_certs: bool
    crd_conversion: bool
    placeholders: dict[str, list[str]]
    secret_namespaces: dict[str, list[str]]

    @classmethod
    def of(cls, rendered: Rendered) -> MatrixContext:
        values = rendered.values
        self_managed = not values["global"]["certManager"]["enabled"]
        evaluator = values["evaluator"]["secretAccess"]
        evaluator_namespaces = list(evaluator["namespaces"])
        if evaluator["releaseNamespace"]:
            evaluator_namespaces.insert(0, rendered.namespace)
        return cls(
            release_namespace=rendered.namespace,
            self_managed_certs=self_managed,
            crd_conversion=self_managed and values["webhook"]["manageCrdConversion"],
            placeholders={
                "{mutatingWebhook}": [f"{rendered.prefix}-mutating-webhook"],
                "{validatingWebhook}": [f"{rendered.prefix}-validating-webhook"],
                "{certSecret}": [values["webhook"]["certSecretName"]],
                "{multiVersionCrds}": list(multi_version_crds()),
                "{secretNames}": list(evaluator["secretNames"]),
            },
            secret_namespaces={
                "evaluator": sorted(set(evaluator_namespaces)),
                "task-runner": sorted(set(values["taskRunner"]["secretAccess"]["namespaces"])),
            },
        )

    def holds(self, condition: str | None, service: str) -> bool:
        if condition is None:
            return True
        if condition == "selfManagedCerts":
            return self.self_managed_certs
        if condition == "crdConversion":
            return self.crd_conversion
        if condition == "noSecretAccess":
            return not self.secret_namespaces.get(service)
        raise AssertionError(f"unknown condition {condition!r} in {MATRIX}")

    def names(self, entries: list[str] | None) -> list[str | None]:
        if not entries:
            return [None]
        out: list[str | None] = []
        for entry in entries:
            if entry in self.placeholders:
                out.extend(self.placeholders[entry])
            else:
                assert not entry.startswith("{"), f"unknown placeholder {entry} in {MATRIX}"
                out.append(entry)
        return out or [None]

    def namespace(self, text: str | None) -> str:
        if text is None:
            return ""
        return self.release_namespace if text == "{release}" else text


def load_matrix() -> dict[str, Any]:
    return copy.deepcopy(_load_matrix())


@functools.cache
def _load_matrix() -> dict[str, Any]:
    loaded = yaml.safe_load(MATRIX.read_text())
    assert isinstance(loaded, dict)
    return loaded


def matrix_grants(matrix: Mapping[str, Any], service: str, context: MatrixContext) -> set[Grant]:
    grants: set[Grant] = set()
    for need in matrix["services"][service]["needs"]:
        if not context.holds(need.get("when"), service):
            continue
        scope = need["scope"]
        if scope == "cluster":
            scopes = [CLUSTER]
        elif scope == "release":
            scopes = [context.release_namespace]
        elif scope == "secretNamespaces":
            scopes = context.secret_namespaces.get(service, [])
        else:
            raise AssertionError(f"unknown scope {scope!r} in {MATRIX}")
        for where in scopes:
            for resource in need["resources"]:
                for verb in need["verbs"]:
                    for name in context.names(need.get("resourceNames")):
                        grants.add(Grant(where, need["apiGroup"], resource, verb, name))
    return grants


@dataclass(frozen=True, order=True)
class Access:
    """One access question, as a SubjectAccessReview's resourceAttributes ask it."""

    verb: str
    group: str
    resource: str
    namespace: str = ""
    """"" asks about every namespace at once (or a cluster-scoped kind)."""
    name: str = ""

    def attributes(self) -> dict[str, str]:
        resource, _, subresource = self.resource.partition("/")
        attrs = {"verb": self.verb, "group": self.group, "resource": resource}
        if subresource:
            attrs["subresource"] = subresource
        if self.namespace:
            attrs["namespace"] = self.namespace
        if self.name:
            attrs["name"] = self.name
        return attrs


def allowed(grants: Iterable[Grant], access: Access) -> bool:
    """Whether RBAC allows ``access`` given exactly ``grants`` (no wildcards among them)."""
    for g in grants:
        if (g.group, g.resource, g.verb) != (access.group, access.resource, access.verb):
            continue
        if g.name is not None and g.name != access.name:
            continue
        if g.scope == CLUSTER or g.scope == access.namespace:
            return True
    return False


def probes(grants: set[Grant], other_namespace: str) -> set[Access]:
    """Questions around every grant: the grant itself, and one step wider in each direction
    (every namespace, another namespace, another name, every other common verb)."""
    verbs = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
    questions: set[Access] = set()
    for g in grants:
        namespaces = {"", other_namespace} | ({g.scope} if g.scope != CLUSTER else set())
        names = {"", "some-other-name"} | ({g.name} if g.name else set())
        for verb in verbs:
            for namespace in namespaces:
                for name in names:
                    questions.add(Access(verb, g.group, g.resource, namespace, name))
    return questions


def must_not(matrix: Mapping[str, Any], service: str, context: MatrixContext) -> list[Access]:
    entries = [*matrix["everyoneMustNot"], *matrix["services"][service].get("mustNot", [])]
    return [
        Access(
            verb=e["verb"],
            group=e.get("apiGroup", ""),
            resource=e["resource"],
            namespace=context.namespace(e.get("namespace")),
            name=e.get("name", ""),
        )
        for e in entries
        if context.holds(e.get("when"), service)
    ]
