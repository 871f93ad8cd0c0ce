"""KeptnEvaluations: started by ``evaluation.requested`` or by the watch, retried as in Keptn,
finished with per-objective messages, a status and one ``evaluation.finished`` event.

Metric values are written by the test into KeptnMetric status (``static_metric``), on metrics
labelled for a shard no evaluator serves, so each value stays exactly what the test set.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import pytest
from evaluator_kit import (
    FinishedEvents,
    StartEvaluator,
    evaluation,
    make_definition,
    make_evaluation,
    static_metric,
    wait_evaluation,
    wait_until,
)

from klt_common.clients import bus
from klt_common.clients import cluster as k8s
from klt_common.configs.settings import BusSettings
from klt_common.structs import events

EVALUATIONS = k8s.keptn_resource("KeptnEvaluation")


def items(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict((body.get("status") or {}).get("evaluationStatus") or {})


async def k8s_events(cluster: k8s.ClusterClient, namespace: str, name: str) -> list[dict[str, Any]]:
    listed = await cluster.list(k8s.EVENTS, namespace, field_selector=f"involvedObject.name={name}")
    return listed.items


async def test_a_requested_evaluation_retries_until_every_objective_is_met(
    cluster: k8s.ClusterClient,
    namespace: str,
    shard: str,
    bus_settings: BusSettings,
    evaluator: StartEvaluator,
    finished: FinishedEvents,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="klt_evaluator")
    await static_metric(cluster, namespace, "cpu", "5")
    await static_metric(cluster, namespace, "mem", "100")
    await make_definition(cluster, namespace, "gate", [("cpu", "<10"), ("mem", ">200")])
    await evaluator()
    body = await make_evaluation(cluster, namespace, shard, "pre-eval-gate-1", "gate")
    async with bus.Publisher(bus_settings, client_id="scheduler-stand-in") as publisher:
        await publisher.publish(
            events.EvaluationRequested(
                namespace=namespace,
                app="shop",
                evaluation_name="pre-eval-gate-1",
                phase="AppPreDeployEvaluations",
            ),
            source="/test",
        )
        # An event for an evaluation that does not exist is skipped, not dead-lettered.
        await publisher.publish(
            events.EvaluationRequested(
                namespace=namespace, app="shop", evaluation_name="gone", phase="x"
            ),
            source="/test",
        )

    async def two_rounds() -> dict[str, Any] | None:
        got = await evaluation(cluster, namespace, "pre-eval-gate-1")
        return got if (got.get("status") or {}).get("retryCount", 0) >= 2 else None

    progressing = await wait_until(two_rounds)
    assert progressing["status"]["overallStatus"] == "Progressing"
    assert items(progressing) == {
        "cpu": {"value": "5", "status": "Succeeded", "message": "value '5' met objective '<10'"},
        "mem": {
            "value": "100",
            "status": "Failed",
            "message": "value '100' did not meet objective '>200'",
        },
    }
    assert "evaluation.requested: starting" in caplog.text

    # The met objective is frozen; the other is checked again each round until it passes.
    await static_metric(cluster, namespace, "cpu", "50")
    await static_metric(cluster, namespace, "mem", "300")
    done = await wait_evaluation(cluster, namespace, "pre-eval-gate-1", "Succeeded")
    assert items(done)["cpu"]["value"] == "5"
    assert items(done)["mem"]["message"] == "value '300' met objective '>200'"
    assert done["status"]["startTime"] <= done["status"]["endTime"]

    await wait_until(lambda: asyncio.sleep(0, finished.for_evaluation("pre-eval-gate-1")))
    (envelope,) = finished.for_evaluation("pre-eval-gate-1")
    assert envelope.id == f"klt-evaluator/{body['metadata']['uid']}/Succeeded"
    assert envelope.partitionkey == f"{namespace}/shop"
    assert envelope.data.state == "Succeeded"
    assert envelope.data.message == "all 2 objectives met"


async def test_exhausted_retries_fail_the_evaluation_with_its_reasons(
    cluster: k8s.ClusterClient,
    namespace: str,
    shard: str,
    evaluator: StartEvaluator,
    finished: FinishedEvents,
) -> None:
    await static_metric(cluster, namespace, "errors", "7")
    await make_definition(cluster, namespace, "strict", [("errors", "<1")])
    body = await make_evaluation(cluster, namespace, shard, "strict-1", "strict", retries=3)
    await evaluator()
    failed = await wait_evaluation(cluster, namespace, "strict-1", "Failed")
    assert failed["status"]["retryCount"] == 3
    assert items(failed)["errors"]["message"] == "value '7' did not meet objective '<1'"

    async def announced() -> bool:
        annotations = (await evaluation(cluster, namespace, "strict-1"))["metadata"].get(
            "annotations", {}
        )
        return annotations.get("evaluator.klt.sh/announced") == "Failed"

    await wait_until(announced)  # recorded right after the event was published
    await wait_until(lambda: asyncio.sleep(0, finished.for_evaluation("strict-1")))
    (envelope,) = finished.for_evaluation("strict-1")
    assert envelope.id == f"klt-evaluator/{body['metadata']['uid']}/Failed"
    assert envelope.data.message == (
        "retryCount exceeded; errors: value '7' did not meet objective '<1'"
    )
    recorded = await wait_until(lambda: k8s_events(cluster, namespace, "strict-1"))
    assert recorded[0]["reason"] == "ReconcileEvaluationReconcileTimeout"
    assert recorded[0]["type"] == "Warning"
    assert recorded[0]["message"].startswith("Reconcile Evaluation: retryCount exceeded / ")


async def test_targets_beyond_keptn_and_values_that_cannot_be_judged(
    cluster: k8s.ClusterClient,
    namespace: str,
    shard: str,
    evaluator: StartEvaluator,
) -> None:
    for name, value in (("a", "5"), ("b", "2.5"), ("c", "nan"), ("d", "")):
        await static_metric(cluster, namespace, name, value, err="no values in query result")
    objectives = [
        ("a", "<=5"),
        ("a", ">=5"),  # same metric: keyed by metric name, as in Keptn (last objective wins)
        ("b", "1..5"),
        ("c", ">1"),
        ("d", "<1"),
        (f"{namespace}/missing", "<1"),
    ]
    await make_definition(cluster, namespace, "mixed", objectives)
    await make_definition(cluster, namespace, "ok", [("a", "==5"), ("b", "!=3"), ("b", " 2 .. 3 ")])
    await make_definition(cluster, namespace, "bad", [("a", "=>5")])
    await make_evaluation(cluster, namespace, shard, "mixed-1", "mixed", retries=1)
    await make_evaluation(cluster, namespace, shard, "ok-1", "ok", retries=1)
    await make_evaluation(cluster, namespace, shard, "bad-1", "bad", retries=1)
    await evaluator()
    await wait_evaluation(cluster, namespace, "ok-1", "Succeeded")
    mixed = items(await wait_evaluation(cluster, namespace, "mixed-1", "Failed"))
    assert mixed["a"]["message"] == "value '5' met objective '>=5'"
    assert mixed["b"]["message"] == "value '2.5' met objective '1..5'"
    assert mixed["c"] == {
        "value": "nan",
        "status": "Failed",
        "message": "value 'nan' is NaN, not a finite number",
    }
    assert (
        mixed["d"]["message"] == "empty value for: d (last fetch failed: no values in query result)"
    )
    assert (
        mixed["missing"]["message"] == f"KeptnMetric 'missing' not found in namespace {namespace}"
    )
    bad = items(await wait_evaluation(cluster, namespace, "bad-1", "Failed"))
    assert bad["a"]["message"] == (
        "invalid evaluation target '=>5': expected <N, >N, <=N, >=N, ==N, !=N or A..B "
        "(inclusive range)"
    )


async def test_a_missing_definition_keeps_it_pending_until_one_appears(
    cluster: k8s.ClusterClient,
    namespace: str,
    shard: str,
    evaluator: StartEvaluator,
    cluster_settings: Any,
) -> None:
    await static_metric(cluster, namespace, "cpu", "1")
    await make_evaluation(cluster, namespace, shard, "waits-1", "later")
    # A slow timer: the definition's watch event, not the timer, must wake the evaluation.
    await evaluator(definition_retry_seconds=60.0)
    pending = await wait_evaluation(cluster, namespace, "waits-1", "Pending")
    assert pending["status"]["retryCount"] == 0
    recorded = await wait_until(lambda: k8s_events(cluster, namespace, "waits-1"))
    assert recorded[0]["reason"] == "ReconcileEvaluationNotFound"
    assert (
        f"KeptnEvaluationDefinition 'later' not found in namespace {namespace} or "
        f"{cluster_settings.namespace}"
    ) in recorded[0]["message"]
    await asyncio.sleep(1.0)
    assert (await evaluation(cluster, namespace, "waits-1"))["status"]["overallStatus"] == "Pending"
    await make_definition(cluster, namespace, "later", [("cpu", "<2")])
    await wait_evaluation(cluster, namespace, "waits-1", "Succeeded", timeout=10)


@pytest.fixture
async def klt_namespace(cluster: k8s.ClusterClient) -> Any:
    name = f"klt-{uuid.uuid4().hex[:8]}"
    await cluster.create(
        k8s.NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    yield name
    await cluster.delete(k8s.NAMESPACES, name)


async def test_definitions_and_metrics_fall_back_to_the_klt_namespace(
    cluster: k8s.ClusterClient,
    namespace: str,
    klt_namespace: str,
    shard: str,
    evaluator: StartEvaluator,
) -> None:
    await static_metric(cluster, namespace, "local", "1")
    await static_metric(cluster, klt_namespace, "shared", "2")
    await static_metric(cluster, klt_namespace, "explicit", "3")
    # The definition exists only in the klt namespace; so does the metric "shared".
    await make_definition(
        cluster,
        klt_namespace,
        "central",
        [("local", "==1"), ("shared", "==2"), (f"{klt_namespace}/explicit", "==3")],
    )
    await make_evaluation(cluster, namespace, shard, "central-1", "central", retries=1)
    await evaluator(klt_namespace=klt_namespace)
    done = items(await wait_evaluation(cluster, namespace, "central-1", "Succeeded"))
    assert {name: item["value"] for name, item in done.items()} == {
        "local": "1",
        "shared": "2",
        "explicit": "3",
    }


async def test_a_restarted_evaluator_resumes_from_status_and_announces_once(
    cluster: k8s.ClusterClient,
    namespace: str,
    shard: str,
    evaluator: StartEvaluator,
    finished: FinishedEvents,
) -> None:
    await static_metric(cluster, namespace, "latency", "900")
    await make_definition(cluster, namespace, "fast", [("latency", "<500")])
    await make_evaluation(cluster, namespace, shard, "fast-1", "fast", retries=1000)
    first = await evaluator()

    async def rounds(at_least: int) -> int | None:
        got = await evaluation(cluster, namespace, "fast-1")
        count = int((got.get("status") or {}).get("retryCount", 0))
        return count if count >= at_least else None

    await wait_until(lambda: rounds(3))
    await first.close()
    stopped_at = int((await evaluation(cluster, namespace, "fast-1"))["status"]["retryCount"])
    second = await evaluator()
    await wait_until(lambda: rounds(stopped_at + 2))  # counting on, not from zero
    await static_metric(cluster, namespace, "latency", "120")
    done = await wait_evaluation(cluster, namespace, "fast-1", "Succeeded")
    assert done["status"]["retryCount"] > stopped_at
    await second.close()
    await evaluator()  # a third incarnation finds it finished and announced: no second event
    await asyncio.sleep(2.0)
    assert len(finished.for_evaluation("fast-1")) == 1
