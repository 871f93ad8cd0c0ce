"""Analyses: templated queries over a time frame, scored with weights, warnings and key
objectives, values cached in ``status.storedValues``, verdicts exposed as gauges.

The scoring test queries a real Prometheus; the caching test uses the generic HTTP provider so
the test can count requests and make one provider fail and recover.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from evaluator_kit import (
    Exporter,
    FakeProvider,
    PrometheusServer,
    StartEvaluator,
    create,
    labels,
    make_provider,
    wait_until,
)

from klt_common.clients import cluster as k8s

ANALYSES = k8s.keptn_resource("Analysis")


async def make_template(
    cluster: k8s.ClusterClient, namespace: str, name: str, provider: str, query: str
) -> None:
    await create(
        cluster,
        "AnalysisValueTemplate",
        {
            "apiVersion": "metrics.keptn.sh/v1",
            "kind": "AnalysisValueTemplate",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"provider": {"name": provider}, "query": query},
        },
    )


async def make_analysis_definition(
    cluster: k8s.ClusterClient,
    namespace: str,
    name: str,
    objectives: list[dict[str, Any]],
    *,
    passing: int,
    warning: int,
) -> None:
    await create(
        cluster,
        "AnalysisDefinition",
        {
            "apiVersion": "metrics.keptn.sh/v1",
            "kind": "AnalysisDefinition",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "objectives": objectives,
                "totalScore": {"passPercentage": passing, "warningPercentage": warning},
            },
        },
    )


async def make_analysis(
    cluster: k8s.ClusterClient,
    namespace: str,
    shard: str,
    name: str,
    definition: str,
    timeframe: dict[str, str],
    args: dict[str, str] | None = None,
) -> None:
    await create(
        cluster,
        "Analysis",
        {
            "apiVersion": "metrics.keptn.sh/v1",
            "kind": "Analysis",
            "metadata": {"name": name, "namespace": namespace, "labels": labels(shard)},
            "spec": {
                "timeframe": timeframe,
                "args": args or {},
                "analysisDefinition": {"name": definition},
            },
        },
    )


async def analysis_status(cluster: k8s.ClusterClient, namespace: str, name: str) -> dict[str, Any]:
    return dict((await cluster.get(ANALYSES, name, namespace)).get("status") or {})


async def wait_state(
    cluster: k8s.ClusterClient, namespace: str, name: str, state: str, timeout: float = 30
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        status = await analysis_status(cluster, namespace, name)
        return status if status.get("state") == state else None

    result: dict[str, Any] = await wait_until(probe, timeout=timeout)
    return result


def objective(
    template: str,
    *,
    weight: int = 1,
    key: bool = False,
    failure: dict[str, Any] | None = None,
    warning: dict[str, Any] | None = None,
) -> dict[str, Any]:
    target: dict[str, Any] = {}
    if failure:
        target["failure"] = failure
    if warning:
        target["warning"] = warning
    return {
        "analysisValueTemplateRef": {"name": template},
        "target": target,
        "weight": weight,
        "keyObjective": key,
    }


async def test_a_weighted_analysis_with_a_warning_scores_as_worked_out_by_hand(
    cluster: k8s.ClusterClient,
    namespace: str,
    shard: str,
    exporter: Exporter,
    prometheus: PrometheusServer,
    evaluator: StartEvaluator,
) -> None:
    series = f"klt_analysis_{uuid.uuid4().hex[:8]}"
    values = {"rt": 200.0, "errors": 3.0, "cpu": 90.0, "throughput": 150.0}
    for metric, value in values.items():
        exporter.set(series, value, metric=metric)
    await prometheus.wait_for(f"count({series})", 4.0)
    seen_at = time.time()
    await make_provider(cluster, namespace, "prom", prometheus.url, type_="prometheus")
    for metric in values:
        # Go-template args: the series comes from the Analysis, the label from the template.
        await make_template(
            cluster, namespace, metric, "prom", f'max({{{{.series}}}}{{metric="{metric}"}})'
        )
    objectives = [
        objective(
            "rt",
            weight=2,
            failure={"greaterThan": {"fixedValue": 500}},
            warning={"greaterThan": {"fixedValue": 300}},
        ),
        objective(
            "errors",
            failure={"greaterThan": {"fixedValue": 5}},
            warning={"inRange": {"lowBound": 1, "highBound": 5}},
        ),
        objective("cpu", failure={"greaterThan": {"fixedValue": "80"}}),
        objective("throughput", weight=2, failure={"lessThan": {"fixedValue": "100"}}),
    ]
    await make_analysis_definition(
        cluster, namespace, "release", objectives, passing=90, warning=70
    )
    key_objectives = [dict(o) for o in objectives]
    key_objectives[2] = {**objectives[2], "keyObjective": True}
    await make_analysis_definition(
        cluster, namespace, "release-strict", key_objectives, passing=90, warning=70
    )
    # The frame must lie where Prometheus has samples: start it after the series appeared.
    await asyncio.sleep(max(0.0, seen_at + 3 - time.time()))
    start = datetime.fromtimestamp(int(seen_at) + 1, UTC)
    frame = {
        "from": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "to": (start + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    await make_analysis(cluster, namespace, shard, "weighted", "release", frame, {"series": series})
    await make_analysis(
        cluster, namespace, shard, "strict", "release-strict", {"recent": "2s"}, {"series": series}
    )
    running = await evaluator()

    status = await wait_state(cluster, namespace, "weighted", "Completed")
    raw = json.loads(status["raw"])
    # By hand:
    #   rt          200: not > 500 (no failure); not > 300 (no warning)  -> full weight  2
    #   errors        3: not > 5; in [1, 5] -> warning                   -> half weight  0.5
    #   cpu          90: > 80 -> failure                                 -> 0
    #   throughput  150: not < 100                                       -> full weight  2
    #   total 2 + 0.5 + 0 + 2 = 4.5 of a maximum 2 + 1 + 1 + 2 = 6  ->  4.5 / 6 = 75 %
    #   75 % < 90 % (pass) but >= 70 % (warning)                     ->  pass false, warning true
    assert [o["score"] for o in raw["objectiveResults"]] == [2.0, 0.5, 0.0, 2.0]
    assert [o["value"] for o in raw["objectiveResults"]] == [200.0, 3.0, 90.0, 150.0]
    assert (raw["totalScore"], raw["maximumScore"]) == (4.5, 6.0)
    assert (raw["pass"], raw["warning"]) == (False, True)
    assert (status["pass"], status["warning"]) == (False, True)
    assert raw["objectiveResults"][1]["result"]["warning"] is True
    assert raw["objectiveResults"][2]["result"]["failResult"]["fulfilled"] is True
    assert raw["objectiveResults"][0]["query"] == f'max({series}{{metric="rt"}})'
    fixed = {k: datetime.fromisoformat(v) for k, v in status["timeframe"].items()}
    assert fixed == {k: datetime.fromisoformat(v) for k, v in frame.items()}
    assert set(status["storedValues"]) == set(values)
    assert status["storedValues"]["cpu"]["value"] == "90"
    assert "errMsg" not in status["storedValues"]["cpu"]

    # Same values, but cpu is a key objective: its failure fails the whole analysis.
    strict = await wait_state(cluster, namespace, "strict", "Completed")
    assert (strict.get("pass", False), strict.get("warning", False)) == (False, False)
    assert json.loads(strict["raw"])["totalScore"] == 4.5

    _, text = await running.get("/metrics")
    weighted = next(
        line
        for line in text.splitlines()
        if line.startswith("keptn_analysis_result{") and 'name="weighted"' in line
    )
    assert f'namespace="{namespace}"' in weighted
    assert weighted.endswith(" 75.0")
    rt_line = next(
        line
        for line in text.splitlines()
        if line.startswith("keptn_objective_result{")
        and 'analysis_name="weighted"' in line
        and 'name="rt"' in line
    )
    assert 'key_objective="false"' in rt_line
    assert 'weight="2"' in rt_line
    assert rt_line.endswith(" 200.0")


@pytest.fixture
async def fake() -> AsyncIterator[FakeProvider]:
    server = await FakeProvider().start()
    yield server
    await server.stop()


async def test_partial_results_are_cached_and_failed_ones_retried(
    cluster: k8s.ClusterClient,
    namespace: str,
    shard: str,
    fake: FakeProvider,
    evaluator: StartEvaluator,
) -> None:
    fake.answer("GET", "/good", {"value": 10})
    healthy = False

    async def flaky(_request: web.Request) -> web.Response:
        if healthy:
            return web.json_response({"value": 1})
        return web.json_response({"message": "warming up"}, status=503)

    fake.on("GET", "/flaky", flaky)
    await make_provider(
        cluster,
        namespace,
        "web",
        fake.url,
        annotations={"evaluator.klt.sh/provider-type": "http"},
    )
    await make_template(cluster, namespace, "good", "web", "/good?window={{.window}} $.value")
    await make_template(cluster, namespace, "flaky", "web", "/flaky $.value")
    await make_template(cluster, namespace, "needs-arg", "web", "/good?x={{.missing}} $.value")
    objectives = [objective("good"), objective("flaky"), objective("needs-arg")]
    await make_analysis_definition(cluster, namespace, "def", objectives, passing=50, warning=20)
    await make_analysis(
        cluster, namespace, shard, "partial", "def", {"recent": "5m"}, {"window": "5m"}
    )
    await evaluator(analysis_retry_seconds=0.5)

    async def errors_stored() -> dict[str, Any] | None:
        status = await analysis_status(cluster, namespace, "partial")
        stored = status.get("storedValues") or {}
        return status if len(stored) == 3 and stored["flaky"].get("errMsg") else None

    status = await wait_until(errors_stored)
    assert status["state"] == "Progressing"
    assert status["storedValues"]["good"]["value"] == "10"
    assert status["storedValues"]["good"]["query"] == "/good?window=5m $.value"
    assert status["storedValues"]["flaky"]["errMsg"] == (
        'http provider answered HTTP 503: {"message": "warming up"}'
    )
    assert status["storedValues"]["needs-arg"]["errMsg"] == (
        "could not template the args: missing argument 'missing' in query template "
        "(spec.args has: window)"
    )
    await asyncio.sleep(1.5)
    assert len(fake.requests_to("/flaky")) >= 2  # retried
    assert len(fake.requests_to("/good")) == 1  # cached in storedValues, not fetched again

    healthy = True
    await cluster.patch(
        ANALYSES, "partial", {"spec": {"args": {"window": "5m", "missing": "y"}}}, namespace
    )
    done = await wait_state(cluster, namespace, "partial", "Completed")
    assert done["pass"] is True
    assert json.loads(done["raw"])["totalScore"] == 3.0
    assert len(fake.requests_to("/good")) == 2  # once for "good", once for "needs-arg"


async def test_a_missing_analysis_definition_leaves_it_pending(
    cluster: k8s.ClusterClient,
    namespace: str,
    shard: str,
    fake: FakeProvider,
    evaluator: StartEvaluator,
) -> None:
    fake.answer("GET", "/v", {"value": 1})
    await make_provider(
        cluster, namespace, "web", fake.url, annotations={"evaluator.klt.sh/provider-type": "http"}
    )
    await make_template(cluster, namespace, "v", "web", "/v $.value")
    await make_analysis(cluster, namespace, shard, "orphan", "nowhere", {"recent": "1m"})
    await evaluator(definition_retry_seconds=60.0)

    async def warned() -> list[dict[str, Any]]:
        listed = await cluster.list(
            k8s.EVENTS, namespace, field_selector="involvedObject.name=orphan"
        )
        return listed.items

    recorded = await wait_until(warned)
    assert recorded[0]["reason"] == "AnalysisDefinitionNotFound"
    assert (
        recorded[0]["message"] == f"AnalysisDefinition 'nowhere' not found in namespace {namespace}"
    )
    assert (await analysis_status(cluster, namespace, "orphan")).get(
        "state", "Pending"
    ) == "Pending"
    await make_analysis_definition(
        cluster, namespace, "nowhere", [objective("v")], passing=100, warning=0
    )
    done = await wait_state(cluster, namespace, "orphan", "Completed", timeout=10)
    assert done["pass"] is True


async def test_objectives_are_fetched_concurrently_within_the_bound(
    cluster: k8s.ClusterClient,
    namespace: str,
    shard: str,
    fake: FakeProvider,
    evaluator: StartEvaluator,
) -> None:
    in_flight = 0
    peak = 0

    async def slow(_request: web.Request) -> web.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.4)
        in_flight -= 1
        return web.json_response({"value": 1})

    fake.on("GET", "/slow", slow)
    await make_provider(
        cluster, namespace, "web", fake.url, annotations={"evaluator.klt.sh/provider-type": "http"}
    )
    names = [f"t{i}" for i in range(6)]
    for name in names:
        await make_template(cluster, namespace, name, "web", f"/slow?n={name} $.value")
    await make_analysis_definition(
        cluster, namespace, "six", [objective(n) for n in names], passing=100, warning=0
    )
    await make_analysis(cluster, namespace, shard, "six-1", "six", {"recent": "1m"})
    await evaluator(analysis_concurrency=2)
    done = await wait_state(cluster, namespace, "six-1", "Completed")
    assert done["pass"] is True
    assert peak == 2  # concurrent, but never more than analysis_concurrency at once
    assert len(fake.requests_to("/slow")) == 6
