"""Keptn's task and evaluation instruments: counted once at the finishing write, with Keptn's
attribute names as labels; the active gauges follow watch events, one series per object."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from klt_evaluator.meters import EvaluationMeters
from klt_task_runner.meters import TaskMeters


def _task(
    name: str, *, namespace: str = "shop", status: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "taskDefinition": "notify",
            "checkType": "pre",
            "context": {
                "appName": "shop",
                "appVersion": "",
                "workloadName": "shop-web",
                "workloadVersion": "1.2.0",
                "taskType": "pre",
                "objectType": "Workload",
            },
        },
        "status": status or {"status": "Pending"},
    }


TASK_LABELS = {
    "keptn_deployment_app_name": "shop",
    "keptn_deployment_app_version": "",
    "keptn_deployment_workload_name": "shop-web",
    "keptn_deployment_workload_version": "1.2.0",
    "keptn_deployment_task_name": "pre-notify-1",
    "keptn_deployment_task_type": "pre",
}


def test_a_finished_task_is_counted_and_timed_with_keptns_attributes() -> None:
    registry = CollectorRegistry()
    meters = TaskMeters(registry)
    meters.finished(
        _task(
            "pre-notify-1",
            status={
                "status": "Succeeded",
                "startTime": "2026-01-01T10:00:00Z",
                "endTime": "2026-01-01T10:00:42Z",
            },
        )
    )
    labels = {**TASK_LABELS, "keptn_deployment_task_status": "Succeeded"}
    assert registry.get_sample_value("keptn_task_count_total", labels) == 1
    assert registry.get_sample_value("keptn_task_duration_count", labels) == 1
    assert registry.get_sample_value("keptn_task_duration_sum", labels) == 42
    # OpenTelemetry's default boundaries, as Keptn's dashboards expect.
    assert registry.get_sample_value("keptn_task_duration_bucket", {**labels, "le": "25.0"}) == 0
    assert registry.get_sample_value("keptn_task_duration_bucket", {**labels, "le": "50.0"}) == 1
    # The write that finished it said so before the watch did.
    assert registry.get_sample_value("keptn_task_active", TASK_LABELS) == 0


def test_the_active_gauge_follows_watch_events_and_forgets_deleted_tasks() -> None:
    registry = CollectorRegistry()
    meters = TaskMeters(registry)

    def active() -> float | None:
        return registry.get_sample_value("keptn_task_active", TASK_LABELS)

    assert active() is None
    meters.on_task("ADDED", _task("pre-notify-1"))
    assert active() == 1
    meters.on_task("MODIFIED", _task("pre-notify-1", status={"status": "Progressing"}))
    assert active() == 1
    ended = {"status": "Failed", "endTime": "2026-01-01T10:00:42Z"}
    meters.on_task("MODIFIED", _task("pre-notify-1", status=ended))
    assert active() == 0
    meters.on_task("DELETED", _task("pre-notify-1", status=ended))
    assert active() is None
    assert registry.get_sample_value("keptn_task_count_total", TASK_LABELS) is None


def test_tasks_with_equal_attributes_share_one_series_active_while_either_runs() -> None:
    # Keptn's attributes carry no namespace: two namespaces' tasks can look the same.
    registry = CollectorRegistry()
    meters = TaskMeters(registry)
    done = {"status": "Succeeded", "endTime": "2026-01-01T10:00:42Z"}
    meters.on_task("ADDED", _task("pre-notify-1", namespace="a", status=done))
    meters.on_task("ADDED", _task("pre-notify-1", namespace="b"))
    assert registry.get_sample_value("keptn_task_active", TASK_LABELS) == 1
    meters.on_task("MODIFIED", _task("pre-notify-1", namespace="b", status=done))
    assert registry.get_sample_value("keptn_task_active", TASK_LABELS) == 0
    meters.on_task("DELETED", _task("pre-notify-1", namespace="a", status=done))
    assert registry.get_sample_value("keptn_task_active", TASK_LABELS) == 0


def _evaluation(status: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": "pre-eval-slo-7", "namespace": "shop"},
        "spec": {
            "appName": "shop",
            "appVersion": "2.0.0",
            "workloadVersion": "",
            "evaluationDefinition": "slo",
            "checkType": "pre-eval",
        },
        "status": status,
    }


@pytest.mark.parametrize("verdict", ["Succeeded", "Failed"])
def test_a_finished_evaluation_is_counted_and_timed_with_keptns_attributes(verdict: str) -> None:
    registry = CollectorRegistry()
    meters = EvaluationMeters(registry)
    identity = {
        "keptn_deployment_app_name": "shop",
        "keptn_deployment_app_version": "2.0.0",
        "keptn_deployment_workload_name": "",
        "keptn_deployment_workload_version": "",
        "keptn_deployment_evaluation_name": "pre-eval-slo-7",
        "keptn_deployment_evaluation_type": "pre-eval",
    }
    meters.on_evaluation("ADDED", _evaluation({"overallStatus": "Progressing"}))
    assert registry.get_sample_value("keptn_evaluation_active", identity) == 1
    meters.finished(
        _evaluation(
            {
                "overallStatus": verdict,
                "startTime": "2026-01-01T10:00:00Z",
                "endTime": "2026-01-01T10:00:07Z",
            }
        )
    )
    labels = {**identity, "keptn_deployment_evaluation_status": verdict}
    assert registry.get_sample_value("keptn_evaluation_count_total", labels) == 1
    assert registry.get_sample_value("keptn_evaluation_duration_sum", labels) == 7
    assert registry.get_sample_value("keptn_evaluation_active", identity) == 0


def test_a_finished_check_without_times_is_counted_but_not_timed() -> None:
    registry = CollectorRegistry()
    meters = TaskMeters(registry)
    meters.finished(_task("pre-notify-1", status={"status": "Failed"}))
    labels = {**TASK_LABELS, "keptn_deployment_task_status": "Failed"}
    assert registry.get_sample_value("keptn_task_count_total", labels) == 1
    assert registry.get_sample_value("keptn_task_duration_count", labels) is None
