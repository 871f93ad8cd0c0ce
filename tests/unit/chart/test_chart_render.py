"""The umbrella chart renders, lints and rejects bad values; what it renders is sound.

Covered, for every value set in ``chart_kit.VALUE_SETS`` (defaults, bundled Kafka, cert-manager,
HPA and KEDA, allowed and denied namespaces, failurePolicy Ignore, observability, ...):

- ``helm lint --strict`` passes, and ``values.schema.json`` (generated, and up to date) rejects
  unknown keys and invalid values;
- every object carries the chart's labels and sits in the release namespace (cluster-scoped
  kinds aside), and no two objects share a kind and name;
- every ``KLT_*`` variable a Deployment sets is a real setting of that service, and the service's
  settings load from exactly that environment;
- pods run as non-root with a read-only root filesystem, no privilege escalation, and resources;
- Kafka: an existing bootstrap address by default, or the bundled broker (apache/kafka at the
  dev stack's Kafka version) with every service pointed at it;
- scaling: an HPA or a KEDA ScaledObject per service, never both on one Deployment, on each
  consumer's real group and topic, and no fixed replica count under either;
- the kinds whose CRDs the dev stack lacks (ScaledObject, ServiceMonitor, Certificate, Issuer)
  match the local schemas of ``foreign_kinds.py``;
- the dashboards are valid Grafana JSON querying Keptn's metric names (and the services' own).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_kit import (
    CHART,
    CONSUMERS,
    KUBE_VERSION,
    REPO,
    SERVICES,
    VALUE_SETS,
    VALUES_KEY,
    HelmError,
    Rendered,
    helm,
    name_prefix,
    render,
)
from foreign_kinds import MODELS
from pydantic import BaseModel

from klt_app_aggregator.app import CONSUMER_GROUP as AGGREGATOR_GROUP
from klt_app_aggregator.settings import AppAggregatorSettings
from klt_cli.devstack import versions
from klt_common.configs.settings import ServiceSettings
from klt_common.structs.events import Topic
from klt_evaluator.settings import EvaluatorSettings
from klt_scheduler.settings import SchedulerSettings
from klt_task_runner.settings import TaskRunnerSettings
from klt_webhook.settings import WebhookSettings

Renders = Callable[[str], Rendered]

SETTINGS: dict[str, type[ServiceSettings]] = {
    "webhook": WebhookSettings,
    "app-aggregator": AppAggregatorSettings,
    "task-runner": TaskRunnerSettings,
    "evaluator": EvaluatorSettings,
    "scheduler": SchedulerSettings,
}


def _default(settings: type[ServiceSettings], group: str) -> Any:
    return settings.model_fields[group].default


# Each consumer's group (the code's default) and topic (before the prefix).
CONSUMED: dict[str, tuple[str, str]] = {
    "app-aggregator": (AGGREGATOR_GROUP, Topic.DISCOVERY.value),
    "task-runner": (_default(TaskRunnerSettings, "tasks").consumer_group, Topic.TASKS.value),
    "evaluator": (
        _default(EvaluatorSettings, "evaluator").consumer_group,
        Topic.EVALUATIONS.value,
    ),
    "scheduler": (
        _default(SchedulerSettings, "scheduler").consumer_group,
        Topic.LIFECYCLE.value,
    ),
}

CLUSTER_SCOPED = {
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
}


# --- lint and schema ------------------------------------------------------------------------------


def test_helm_lint_passes_strictly_for_every_value_set(helm_bin: Path, value_set: str) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as values:
        yaml.safe_dump(VALUE_SETS[value_set], values)
        values.flush()
        out = helm(
            helm_bin,
            "lint",
            "--strict",
            str(CHART),
            "--kube-version",
            KUBE_VERSION,
            "--values",
            values.name,
        )
    assert "0 chart(s) failed" in out


def test_the_schemas_are_generated_from_generate_schemas_py() -> None:
    script = REPO / "deploy" / "charts" / "generate_schemas.py"
    out = subprocess.run(
        [sys.executable, str(script), "--check"], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        pytest.param({"webhook": {"replica": 3}}, "'replica' not allowed", id="typo-in-service"),
        pytest.param(
            {"global": {"kafka": {"bootstrapServer": "k:9092"}}},
            "'bootstrapServer' not allowed",
            id="typo-in-global",
        ),
        pytest.param({"schedular": {}}, "'schedular' not allowed", id="typo-top-level"),
        pytest.param(
            {"webhook": {"failurePolicy": "Sometimes"}}, "failurePolicy", id="failure-policy"
        ),
        pytest.param({"webhook": {"timeoutSeconds": 31}}, "timeoutSeconds", id="timeout>30"),
        pytest.param(
            {"webhook": {"allowedNamespaces": ["Not_A_Namespace"]}},
            "allowedNamespaces",
            id="namespace-name",
        ),
        pytest.param({"webhook": {"keda": {"enabled": True}}}, "'keda' not allowed", id="no-keda"),
        pytest.param(
            {"scheduler": {"keda": {"minReplicas": 0}}}, "minReplicas", id="keda-scale-to-zero"
        ),
        pytest.param(
            {"global": {"kafka": {"bundled": False, "bootstrapServers": ""}}},
            "bootstrapServers",
            id="no-kafka-at-all",
        ),
        pytest.param(
            {"global": {"kafka": {"bundled": True, "replicationFactor": 3}}},
            "replicationFactor",
            id="bundled-replication",
        ),
        pytest.param(
            {"evaluator": {"extraSettings": {"lower_case": "1"}}},
            "invalid propertyName 'lower_case'",
            id="extra-setting-name",
        ),
        pytest.param(
            {"webhook": {"admissionPort": 8080}}, "admissionPort", id="port-clash-with-metrics"
        ),
    ],
)
def test_the_schema_rejects_bad_values(
    helm_bin: Path, overrides: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(HelmError, match=re.escape(complaint)):
        render(helm_bin, overrides)


def test_shutdown_grace_must_fit_in_the_termination_grace(helm_bin: Path) -> None:
    with pytest.raises(HelmError, match="shutdownGraceSeconds"):
        render(helm_bin, {"scheduler": {"shutdownGraceSeconds": 30}})


# --- objects --------------------------------------------------------------------------------------


def test_every_object_is_labelled_namespaced_and_unique(
    rendered_sets: Renders, value_set: str
) -> None:
    rendered = rendered_sets(value_set)
    seen: set[tuple[str, str, str]] = set()
    for doc in rendered.docs:
        meta = doc["metadata"]
        key = (doc["kind"], meta.get("namespace", ""), meta["name"])
        assert key not in seen, f"{key} rendered twice"
        seen.add(key)
        labels = meta.get("labels") or {}
        assert labels.get("app.kubernetes.io/part-of") == "klt", key
        if doc["kind"] != "CustomResourceDefinition":
            assert labels.get("app.kubernetes.io/instance") == rendered.release, key
        if doc["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in meta, key
        elif not (doc["kind"] == "RoleBinding" and meta["name"].endswith("-secrets")):
            assert meta.get("namespace") == rendered.namespace, key


def test_each_service_is_its_own_deployment_service_and_account(rendered_sets: Renders) -> None:
    rendered = rendered_sets("defaults")
    for service in SERVICES:
        name = f"klt-{service}"
        deployment = rendered.get("Deployment", name)
        pod = deployment["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == name
        assert pod["containers"][0]["image"] == f"ghcr.io/klt-dev/klt-{service}:v0.1.0"
        assert rendered.get("ServiceAccount", name)
        ports = {p["name"]: p for p in rendered.get("Service", name)["spec"]["ports"]}
        assert ports["http-metrics"]["port"] == 8080
    assert rendered.deployment("webhook")["spec"]["replicas"] == 2


@pytest.mark.parametrize(
    ("release", "values", "prefix"),
    [
        pytest.param("klt", {}, "klt", id="klt"),
        pytest.param("prod", {}, "prod-klt", id="appends-klt"),
        pytest.param("my-klt", {}, "my-klt", id="contains-klt"),
        pytest.param(
            "x", {"global": {"fullnameOverride": "lifecycle"}}, "lifecycle", id="override"
        ),
    ],
)
def test_names_are_prefixed_like_klt_lib_says(
    helm_bin: Path, release: str, values: dict[str, Any], prefix: str
) -> None:
    rendered = render(helm_bin, values, release=release)
    assert name_prefix(release, rendered.values) == prefix
    assert f"{prefix}-scheduler" in rendered.names("Deployment")
    assert f"{prefix}-mutating-webhook" in rendered.names("MutatingWebhookConfiguration")


def test_pods_run_unprivileged_with_a_read_only_root_filesystem(
    rendered_sets: Renders, value_set: str
) -> None:
    rendered = rendered_sets(value_set)
    workloads = rendered.of_kind("Deployment") + rendered.of_kind("StatefulSet")
    assert workloads
    for workload in workloads:
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["enableServiceLinks"] is False
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]
            if workload["kind"] == "Deployment":
                assert security["readOnlyRootFilesystem"] is True
                mounts = {m["mountPath"] for m in container["volumeMounts"]}
                assert "/tmp" in mounts
            assert container["resources"]["requests"]["memory"]
            assert container["resources"]["limits"]["memory"]


# --- settings -------------------------------------------------------------------------------------


def _field_path_exists(model: type[BaseModel], parts: list[str]) -> bool:
    current: type[BaseModel] = model
    for index, part in enumerate(parts):
        fields = current.model_fields
        if part not in fields:
            return False
        if index < len(parts) - 1:
            annotation = fields[part].annotation
            if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
                return False
            current = annotation
    return True


@pytest.mark.parametrize("service", SERVICES)
def test_every_klt_variable_is_a_setting_that_loads(
    rendered_sets: Renders,
    value_set: str,
    service: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """pydantic-settings ignores unknown KLT_ variables, so a renamed setting would be lost
    silently; this ties every variable the chart sets to a field of the service's settings."""
    rendered = rendered_sets(value_set)
    env = rendered.env(service)
    settings_class = SETTINGS[service]
    klt_vars = {name: value for name, value in env.items() if name.startswith("KLT_")}
    assert klt_vars
    for name in klt_vars:
        parts = name.removeprefix("KLT_").lower().split("__")
        assert _field_path_exists(settings_class, parts), f"{service}: {name} is no setting"
    for name in list(os.environ):
        if name.startswith("KLT_"):
            monkeypatch.delenv(name)
    for name, value in klt_vars.items():
        monkeypatch.setenv(name, value)
    settings = settings_class()
    assert settings.cluster.namespace == rendered.namespace
    assert settings.observability.http_port == 8080
    assert settings.shutdown.grace_seconds < float(
        rendered.deployment(service)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    )


def test_extra_settings_become_klt_variables(helm_bin: Path) -> None:
    rendered = render(
        helm_bin,
        {
            "appAggregator": {"extraSettings": {"AGGREGATION__WORKERS": 16}},
            "scheduler": {"extraSettings": {"SCHEDULER__RESYNC_SECONDS": "15"}},
        },
    )
    assert rendered.env("app-aggregator")["KLT_AGGREGATION__WORKERS"] == "16"
    assert rendered.env("scheduler")["KLT_SCHEDULER__RESYNC_SECONDS"] == "15"


def test_the_task_runner_is_given_the_runtime_images(rendered_sets: Renders) -> None:
    env = rendered_sets("defaults").env("task-runner")
    assert env["KLT_TASKS__DENO_IMAGE"] == "ghcr.io/klt-dev/deno-runtime:v0.1.0"
    assert env["KLT_TASKS__PYTHON_IMAGE"] == "ghcr.io/klt-dev/python-runtime:v0.1.0"


# --- Kafka ----------------------------------------------------------------------------------------


def test_by_default_every_service_uses_the_existing_kafka(rendered_sets: Renders) -> None:
    rendered = rendered_sets("defaults")
    assert not rendered.of_kind("StatefulSet")
    for service in SERVICES:
        assert rendered.env(service)["KLT_BUS__BOOTSTRAP_SERVERS"] == "kafka:9092"


def test_the_bundled_kafka_is_one_kraft_broker_every_service_uses(rendered_sets: Renders) -> None:
    rendered = rendered_sets("bundled-kafka")
    (broker,) = rendered.of_kind("StatefulSet")
    assert broker["metadata"]["name"] == "klt-kafka"
    assert broker["spec"]["replicas"] == 1
    container = broker["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == f"docker.io/apache/kafka:{versions.KAFKA_VERSION}", (
        "the bundled broker runs the dev stack's Kafka version"
    )
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert rendered.get("Service", "klt-kafka")
    assert rendered.get("Service", "klt-kafka-headless")["spec"]["clusterIP"] == "None"
    for service in SERVICES:
        service_env = rendered.env(service)
        assert service_env["KLT_BUS__BOOTSTRAP_SERVERS"] == "klt-kafka.klt-system.svc:9092"
        assert service_env["KLT_BUS__TOPIC_PREFIX"] == "prod."
        assert service_env["KLT_BUS__REPLICATION_FACTOR"] == "1"


# --- scaling --------------------------------------------------------------------------------------


def _targets(rendered: Rendered, kind: str) -> dict[str, dict[str, Any]]:
    return {d["spec"]["scaleTargetRef"]["name"]: d for d in rendered.of_kind(kind)}


def test_no_deployment_is_scaled_by_an_hpa_and_keda_at_once(
    rendered_sets: Renders, value_set: str
) -> None:
    rendered = rendered_sets(value_set)
    hpas, scaled = _targets(rendered, "HorizontalPodAutoscaler"), _targets(rendered, "ScaledObject")
    assert not set(hpas) & set(scaled)
    for deployment in rendered.of_kind("Deployment"):
        name = deployment["metadata"]["name"]
        autoscaled = name in hpas or name in scaled
        assert ("replicas" in deployment["spec"]) is not autoscaled, name


def test_keda_scales_each_consumer_on_its_group_and_topic(rendered_sets: Renders) -> None:
    rendered = rendered_sets("keda-only")
    scaled = _targets(rendered, "ScaledObject")
    assert set(scaled) == {f"klt-{s}" for s in CONSUMERS}, "the webhook consumes nothing"
    for service in CONSUMERS:
        (trigger,) = scaled[f"klt-{service}"]["spec"]["triggers"]
        group, topic = CONSUMED[service]
        assert trigger["type"] == "kafka"
        assert trigger["metadata"]["consumerGroup"] == group
        assert trigger["metadata"]["topic"] == topic
        assert trigger["metadata"]["bootstrapServers"] == "kafka:9092"
        assert scaled[f"klt-{service}"]["spec"]["minReplicaCount"] >= 1


def test_with_hpa_and_keda_the_cpu_target_joins_the_scaled_object(rendered_sets: Renders) -> None:
    rendered = rendered_sets("hpa-and-keda")
    assert set(_targets(rendered, "HorizontalPodAutoscaler")) == {"klt-webhook"}
    for service in CONSUMERS:
        triggers = _targets(rendered, "ScaledObject")[f"klt-{service}"]["spec"]["triggers"]
        assert [t["type"] for t in triggers] == ["kafka", "cpu"]


def test_hpa_targets_cpu_of_every_service(rendered_sets: Renders) -> None:
    hpas = _targets(rendered_sets("hpa-only"), "HorizontalPodAutoscaler")
    assert set(hpas) == {f"klt-{s}" for s in SERVICES}
    for hpa in hpas.values():
        (metric,) = hpa["spec"]["metrics"]
        assert metric["resource"]["name"] == "cpu"


def test_topic_prefix_reaches_the_keda_trigger(helm_bin: Path) -> None:
    rendered = render(
        helm_bin,
        {"global": {"kafka": {"topicPrefix": "team."}}, "scheduler": {"keda": {"enabled": True}}},
    )
    (scaled,) = rendered.of_kind("ScaledObject")
    assert scaled["spec"]["triggers"][0]["metadata"]["topic"] == "team.klt.lifecycle"


def test_disruption_budgets_follow_the_values(rendered_sets: Renders) -> None:
    pdbs = {
        d["metadata"]["name"]: d["spec"]
        for d in rendered_sets("defaults").of_kind("PodDisruptionBudget")
    }
    assert pdbs["klt-webhook"] == {
        "minAvailable": 1,
        "selector": {
            "matchLabels": {
                "app.kubernetes.io/name": "webhook",
                "app.kubernetes.io/instance": "klt",
            }
        },
    }
    assert pdbs["klt-scheduler"]["maxUnavailable"] == 1


# --- kinds without CRDs in the dev stack ---------------------------------------------------------


def test_foreign_kinds_match_their_local_schemas(rendered_sets: Renders, value_set: str) -> None:
    for doc in rendered_sets(value_set).docs:
        group = doc["apiVersion"].split("/")[0]
        if group in ("keda.sh", "monitoring.coreos.com", "cert-manager.io"):
            model = MODELS[(doc["apiVersion"], doc["kind"])]
            model.model_validate(doc)


def test_service_monitors_and_network_policies_when_enabled(rendered_sets: Renders) -> None:
    rendered = rendered_sets("observability-on")
    monitors = {d["metadata"]["name"]: d for d in rendered.of_kind("ServiceMonitor")}
    assert set(monitors) == {f"klt-{s}" for s in SERVICES}
    assert monitors["klt-scheduler"]["metadata"]["labels"]["release"] == "prometheus"
    policies = {d["metadata"]["name"]: d["spec"] for d in rendered.of_kind("NetworkPolicy")}
    assert set(policies) == {f"klt-{s}" for s in SERVICES}
    webhook_ingress = policies["klt-webhook"]["ingress"]
    assert {"ports": [{"port": "https", "protocol": "TCP"}]} in webhook_ingress, (
        "the apiserver must reach the admission port from wherever it runs"
    )
    for spec in policies.values():
        assert spec["policyTypes"] == ["Ingress", "Egress"]
        assert any(
            {"ipBlock": {"cidr": "10.0.0.1/32"}} in rule.get("to", []) for rule in spec["egress"]
        )
    assert not rendered_sets("defaults").of_kind("NetworkPolicy")
    assert not rendered_sets("defaults").of_kind("ServiceMonitor")


# --- dashboards -----------------------------------------------------------------------------------

# Keptn's Prometheus names (keptn-behaviour.md §2), which its dashboards query.
KEPTN_METRICS = {
    "keptn_deployment_count_total",
    "keptn_deployment_duration_bucket",
    "keptn_deployment_active",
    "keptn_deployment_deploymentduration",
    "keptn_deployment_deploymentinterval",
    "keptn_app_count_total",
    "keptn_app_duration_bucket",
    "keptn_app_active",
    "keptn_app_deploymentduration",
    "keptn_app_deploymentinterval",
    "keptn_task_count_total",
    "keptn_task_duration_bucket",
    "keptn_task_active",
    "keptn_evaluation_count_total",
    "keptn_evaluation_duration_bucket",
    "keptn_evaluation_active",
    "keptn_promotion_count_total",
}
OTHER_METRICS = {"up", "container_cpu_usage_seconds_total", "container_memory_working_set_bytes"}
PROMQL_WORDS = {
    "sum", "by", "rate", "increase", "histogram_quantile", "max", "min", "clamp_min", "time",
    "label_values", "le",
}  # fmt: skip


def _metric_names(expr: str) -> set[str]:
    without_strings = re.sub(r'"[^"]*"', "", expr)
    without_labels = re.sub(r"\{[^}]*\}", "", without_strings)
    without_ranges = re.sub(r"\[[^\]]*\]", "", without_labels)
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_ranges))
    grouping = set(re.findall(r"by \(([^)]*)\)", without_ranges))
    labels = {w.strip() for g in grouping for w in g.split(",")}
    return words - PROMQL_WORDS - labels


def test_dashboards_query_keptns_metric_names(rendered_sets: Renders) -> None:
    rendered = rendered_sets("observability-on")
    maps = rendered.of_kind("ConfigMap")
    assert {m["metadata"]["name"] for m in maps} == {
        "klt-dashboard-klt-deployments",
        "klt-dashboard-klt-phases",
        "klt-dashboard-klt-services",
    }
    used: set[str] = set()
    for config_map in maps:
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        ((file_name, text),) = config_map["data"].items()
        dashboard = json.loads(text)
        assert dashboard["uid"] == file_name.removesuffix(".json")
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                assert target["datasource"]["uid"] == "${datasource}"
                for metric in _metric_names(target["expr"]):
                    assert (
                        metric in KEPTN_METRICS
                        or metric in OTHER_METRICS
                        or metric.startswith("klt_")
                    ), f"{file_name}: unknown metric {metric} in {target['expr']}"
                    used.add(metric)
    assert {
        "keptn_deployment_duration_bucket",
        "keptn_deployment_count_total",
        "keptn_app_count_total",
        "keptn_task_duration_bucket",
        "keptn_evaluation_duration_bucket",
    } <= used


def test_service_dashboard_metrics_exist_in_the_services() -> None:
    """Every klt_* metric a dashboard queries is defined by some service."""
    sources = "\n".join(p.read_text() for p in (REPO / "services").glob("*/src/**/*.py"))
    for path in (CHART / "dashboards").glob("*.json"):
        dashboard = json.loads(path.read_text())
        exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
        for expr in exprs:
            for metric in _metric_names(expr):
                if not metric.startswith("klt_"):
                    continue
                base = re.sub(r"_(total|bucket|sum|count)$", "", metric)
                assert f'"{base}"' in sources, f"{path.name}: {metric} is defined by no service"


# --- charts wiring --------------------------------------------------------------------------------


def test_subcharts_are_conditional_on_their_enabled_key(helm_bin: Path) -> None:
    rendered = render(
        helm_bin,
        {
            **{VALUES_KEY[s]: {"enabled": False} for s in SERVICES if s != "scheduler"},
            "crds": {"enabled": False},
        },
    )
    assert rendered.names("Deployment") == {"klt-scheduler"}
    assert not rendered.of_kind("CustomResourceDefinition")
