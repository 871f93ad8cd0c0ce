"""Bad input at scale: no crash, and a clear status every time.

Five targets, each with hypothesis (``KLT_LONG=1``: 10 000 cases each; otherwise a short run):

- **AdmissionReviews** to the pod webhook, over HTTP to a running webhook service (the strategy
  of tests/integration/admission/test_admission_fuzz.py): a 200 with an ``allowed`` answer (and
  a message when denied) or a 400, never the catch-all for unexpected errors;
- **resource specs**: validating AdmissionReviews of every Keptn kind the webhook validates, and
  ConversionReviews of arbitrary objects: allowed, or denied/failed with a message; never the
  catch-all;
- **job configs** of the job executor (the strategies of tests/unit/jobexecutor): a
  configuration or a ``ConfigError`` with a message;
- **CloudEvents**: klt's own envelopes (``events.decode``) and Keptn's (the job executor's
  ``cloudevents.parse``, structured and binary mode): an event or a typed decode error;
- **metric-provider responses**: every provider type queries a real local HTTP server that
  answers with arbitrary status, content type and body (JSON shaped like the providers' APIs,
  or not): a reading or a ``ProviderError`` with a message, never anything else.

Each target counts its cases; the counts are printed (``[faults:fuzz]``) for
docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from faults_kit import LONG, REPO_ROOT, free_port
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from klt_common.clients import cluster as k8s
from klt_common.configs.settings import ClusterSettings
from klt_common.structs import api, events
from klt_evaluator.providers import (
    KNOWN_TYPES,
    ProviderConfig,
    ProviderError,
    Providers,
    Query,
    SecretReader,
    Transport,
)
from klt_task_runner.jobexecutor import cloudevents, config
from klt_webhook import reviews as webhook_reviews
from klt_webhook import validation
from klt_webhook.settings import PodAdmissionSettings

# The strategies of the existing property tests, reused rather than copied.
for _kit in ("tests/integration/admission", "tests/unit/jobexecutor", "tests/unit/events"):
    if str(REPO_ROOT / _kit) not in sys.path:
        sys.path.append(str(REPO_ROOT / _kit))
from admission_kit import RunningWebhook, start_webhook  # noqa: E402
from test_admission_fuzz import reviews as admission_reviews  # noqa: E402
from test_events_codec import any_payload  # noqa: E402
from test_jobexecutor_properties import documents as job_documents  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600 if LONG else 300)]

CASES = int(os.environ.get("KLT_FUZZ_CASES") or (10_000 if LONG else 120))
"""Cases per target: 10 000 in the long run; KLT_FUZZ_CASES overrides either."""
FUZZ = settings(
    max_examples=CASES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(["1", "-0.5", "NaN", "+Inf", "1e309", "", " 3 "]),
)


def shaped_json(keys: list[str]) -> st.SearchStrategy[Any]:
    """JSON values whose object keys are mostly from ``keys``: near what a parser expects."""
    key = st.one_of(st.sampled_from(keys), st.text(max_size=6))
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(key, inner, max_size=5)
        ),
        max_leaves=30,
    )


@dataclass
class Tally:
    cases: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, dict[str, int]] = field(default_factory=dict)

    def count(self, target: str, outcome: str) -> None:
        self.cases[target] = self.cases.get(target, 0) + 1
        per = self.outcomes.setdefault(target, {})
        per[outcome] = per.get(outcome, 0) + 1


TALLY = Tally()


def _clear(error: Exception) -> None:
    """A refusal must say what is wrong."""
    assert str(error).strip(), repr(error)


def _run(target: str, prop: Callable[[], None], capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    prop()
    seconds = time.monotonic() - started
    cases = TALLY.cases.get(target, 0)
    # Hypothesis may stop early only when it has exhausted a strategy; these never are.
    assert cases >= min(CASES, 100), (target, cases)
    with capsys.disabled():
        print(
            f"\n[faults:fuzz] {target}: {cases} cases in {seconds:.0f}s, "
            f"outcomes {dict(sorted(TALLY.outcomes[target].items()))}"
        )


# --------------------------------------------------------------------------------------------
# A background event loop for the targets that need I/O


class Loop:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def bg() -> Iterator[Loop]:
    loop = Loop()
    yield loop
    loop.close()


# --------------------------------------------------------------------------------------------
# AdmissionReviews


@pytest.fixture(scope="module")
def pod_webhook(
    kafka_bootstrap: str, cluster_settings: ClusterSettings
) -> Iterator[RunningWebhook]:
    # No publish loop: nothing this fuzz admits goes onto a broker.
    running, thread, loop, stop = start_webhook(
        kafka_bootstrap, cluster_settings, PodAdmissionSettings(), publish=False
    )
    yield running
    loop.call_soon_threadsafe(stop.set)
    thread.join(30)


@pytest.fixture(scope="module")
async def enabled_namespace(cluster: k8s.ClusterClient) -> Any:
    name = f"t-fuzz-{uuid.uuid4().hex[:8]}"
    await cluster.create(
        k8s.NAMESPACES,
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": name,
                "annotations": {"keptn.sh/lifecycle-toolkit": "enabled"},
            },
        },
    )
    yield name
    await cluster.delete(k8s.NAMESPACES, name)


def test_admission_reviews(
    pod_webhook: RunningWebhook, enabled_namespace: str, capsys: pytest.CaptureFixture[str]
) -> None:
    @FUZZ
    @given(data=st.data())
    def prop(data: st.DataObject) -> None:
        body = data.draw(admission_reviews(enabled_namespace))
        request = urllib.request.Request(
            pod_webhook.url,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, payload = response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            status, payload = exc.code, None
        assert status in (200, 400), status
        if status == 400:
            TALLY.count("admission", "400")
            return
        answer = payload["response"]
        assert isinstance(answer["allowed"], bool)
        assert not any("could not process" in w for w in answer.get("warnings", []))
        if not answer["allowed"]:
            assert answer["status"]["message"]
        TALLY.count("admission", "allowed" if answer["allowed"] else "denied")

    _run("admission", prop, capsys)


# --------------------------------------------------------------------------------------------
# Resource specs: validating and conversion reviews of Keptn kinds

SPEC_KEYS = [
    "container", "deno", "python", "function", "inline", "code", "httpRef", "url",
    "functionRef", "name", "parameters", "map", "secureParameters", "secret", "retries",
    "timeout", "provider", "query", "fetchIntervalSeconds", "range", "interval", "step",
    "aggregation", "storedResults", "analysisDefinition", "timeframe", "from", "to",
    "recent", "args", "objectives", "analysisValueTemplateRef", "target", "failure",
    "warning", "inRange", "notInRange", "lowBound", "highBound", "lessThan",
    "greaterThan", "fixedValue", "weight", "keyObjective", "totalScore",
    "passPercentage", "warningPercentage", "image", "command", "evaluationTarget",
    "keptnMetricRef", "spec", "metadata", "apiVersion", "kind",
]  # fmt: skip
VALIDATED_KINDS = sorted(validation.VALIDATORS)
API_VERSIONS = sorted(
    {e.api_version for e in api.resource_kinds()} | {"lifecycle.keptn.sh/v1alpha3"}
)


@st.composite
def resource_reviews(draw: st.DrawFn) -> tuple[str, str, Any]:
    kind = draw(st.sampled_from(VALIDATED_KINDS))
    objects = st.one_of(
        st.fixed_dictionaries(
            {
                "apiVersion": st.one_of(st.sampled_from(API_VERSIONS), scalars),
                "kind": st.one_of(st.just(kind), scalars),
                "metadata": st.one_of(
                    st.fixed_dictionaries({"name": st.text(max_size=20)}), scalars
                ),
                "spec": shaped_json(SPEC_KEYS),
            }
        ),
        shaped_json(SPEC_KEYS),
    )
    obj = draw(objects)
    which = draw(st.sampled_from(["validate", "convert"]))
    if which == "validate":
        request = {
            "uid": draw(scalars) if draw(st.integers(0, 9)) == 9 else str(uuid.uuid4()),
            "operation": draw(st.sampled_from(["CREATE", "UPDATE", "DELETE", None, 3])),
            "object": obj,
        }
        review: Any = {"apiVersion": "admission.k8s.io/v1", "request": request}
    else:
        request = {
            "uid": draw(scalars) if draw(st.integers(0, 9)) == 9 else str(uuid.uuid4()),
            "desiredAPIVersion": draw(st.one_of(st.sampled_from(API_VERSIONS), scalars)),
            "objects": draw(st.one_of(st.lists(objects, max_size=3), scalars)),
        }
        review = {"apiVersion": "apiextensions.k8s.io/v1", "request": request}
    # Mostly well-formed reviews, so that the objects inside reach the validators.
    junk = shaped_json(["request", "uid", "object", "objects"])
    return which, kind, (draw(junk) if draw(st.integers(0, 9)) == 9 else review)


def test_resource_specs(capsys: pytest.CaptureFixture[str]) -> None:
    @FUZZ
    @given(case=resource_reviews())
    def prop(case: tuple[str, str, Any]) -> None:
        which, kind, review = case
        try:
            if which == "validate":
                answer = webhook_reviews.validation_review(review, kind)["response"]
            else:
                answer = webhook_reviews.conversion_review(review)["response"]
        except webhook_reviews.BadReview as exc:
            _clear(exc)
            TALLY.count("resource-specs", "bad-review")
            return
        if which == "validate":
            assert isinstance(answer["allowed"], bool)
            if not answer["allowed"]:
                message = answer["status"]["message"]
                assert message, answer
                assert not message.startswith("klt could not"), message
            TALLY.count("resource-specs", f"validate-{answer['allowed']}")
        else:
            result = answer["result"]
            assert result["status"] in ("Success", "Failure")
            if result["status"] == "Failure":
                assert result["message"], result
            TALLY.count("resource-specs", f"convert-{result['status']}")

    _run("resource-specs", prop, capsys)


# --------------------------------------------------------------------------------------------
# Job configurations of the job executor


def test_job_configs(capsys: pytest.CaptureFixture[str]) -> None:
    @FUZZ
    @given(
        document=st.one_of(
            job_documents,
            job_documents.map(lambda d: json.dumps(d)),
            st.text(max_size=200),
        )
    )
    def prop(document: Any) -> None:
        text = document if isinstance(document, str) else json.dumps(document)
        try:
            parsed = config.parse(text)
        except config.ConfigError as exc:
            _clear(exc)
            TALLY.count("job-configs", "config-error")
            return
        assert parsed is not None
        TALLY.count("job-configs", "parsed")

    _run("job-configs", prop, capsys)


# --------------------------------------------------------------------------------------------
# CloudEvents

CE_KEYS = [
    "specversion", "id", "source", "type", "subject", "time", "datacontenttype", "data",
    "partitionkey", "shkeptncontext", "triggeredid", "gitcommitid", "project", "stage",
    "service", "namespace", "app", "task_name", "schema_version", "state", "result",
    "status", "message", "labels",
]  # fmt: skip
EVENT_TYPES = sorted(
    [*events.CATALOGUE, "sh.keptn.event.deployment.triggered", "sh.keptn.event.test.triggered"]
)


@st.composite
def cloud_event_records(draw: st.DrawFn) -> tuple[bytes | None, list[tuple[str, bytes]]]:
    body = draw(
        st.one_of(
            st.fixed_dictionaries(
                {
                    "specversion": st.one_of(st.just("1.0"), scalars),
                    "id": st.one_of(st.just(str(uuid.uuid4())), scalars),
                    "source": st.one_of(st.just("/klt/x"), scalars),
                    "type": st.one_of(st.sampled_from(EVENT_TYPES), scalars),
                },
                optional={key: shaped_json(CE_KEYS) for key in CE_KEYS[4:12]},
            ),
            shaped_json(CE_KEYS),
        )
    )
    valid = json.loads(events.encode(events.make_event(draw(any_payload), source="/fuzz"))[0])
    corrupted = {**valid, draw(st.sampled_from([*valid, "extra"])): draw(shaped_json(CE_KEYS))}
    value = draw(
        st.one_of(
            st.just(json.dumps(body).encode()),
            st.just(json.dumps(valid).encode()),
            st.just(json.dumps(corrupted).encode()),
            st.binary(max_size=200),
            st.none(),
        )
    )
    header_names = st.sampled_from(
        ["content-type", "ce_specversion", "ce_id", "ce_source", "ce_type", "traceparent", "x"]
    )
    headers = draw(
        st.lists(
            st.tuples(header_names, st.one_of(st.binary(max_size=30), st.just(b"1.0"))),
            max_size=5,
        )
    )
    return value, headers


def test_cloud_events(capsys: pytest.CaptureFixture[str]) -> None:
    @FUZZ
    @given(record=cloud_event_records())
    def prop(record: tuple[bytes | None, list[tuple[str, bytes]]]) -> None:
        value, headers = record
        try:
            envelope = events.decode(value or b"", headers)
        except events.EventDecodeError as exc:
            _clear(exc)
            klt = "unknown" if isinstance(exc, events.UnknownEventTypeError) else "bad"
        else:
            assert envelope.partitionkey == envelope.data.partition_key()
            klt = "event"
        try:
            cloudevents.scope_of(cloudevents.parse(value, headers))
        except cloudevents.EventFormatError as exc:
            _clear(exc)
            keptn = "bad"
        else:
            keptn = "event"
        TALLY.count("cloud-events", f"klt-{klt}/keptn-{keptn}")

    _run("cloud-events", prop, capsys)


# --------------------------------------------------------------------------------------------
# Metric-provider responses

PROVIDER_KEYS = [
    "status", "data", "resultType", "result", "metric", "value", "values", "series",
    "pointlist", "hits", "total", "aggregations", "records", "state", "requestToken",
    "error", "errorType", "timestamps", "access_token", "expires_in", "took", "doc_count",
    "progress", "metadata", "types", "dimensions", "reason", "type", "resolution",
]  # fmt: skip
DQL_SECRET = "dt0s08.CLIENT." + "s" * 64
NUM = "<number>"
# What each provider's API answers when all goes well; ``near`` bends every level of it.
SHAPES: dict[str, Any] = {
    "prometheus": {
        "status": "success",
        "data": {"resultType": "vector", "result": [{"metric": {}, "value": [NUM, NUM]}]},
    },
    "prometheus-range": {
        "status": "success",
        "data": {"resultType": "matrix", "result": [{"metric": {}, "values": [[NUM, NUM]]}]},
    },
    "datadog": {"series": [{"pointlist": [[NUM, NUM]]}]},
    "dynatrace": {"result": [{"data": [{"values": [NUM]}]}]},
    "dql": {"state": "SUCCEEDED", "result": {"records": [{"value": NUM}]}},
    "elastic": {"hits": {"total": {"value": NUM}}, "aggregations": {"a": {"value": NUM}}},
    "http": {"data": {"value": NUM}},
}


@dataclass
class Canned:
    """The fuzz server: answers every request with ``next`` (token requests of the DQL
    provider get a valid token, so its query path is reached)."""

    next: tuple[int, str, bytes] = (200, "application/json", b"{}")
    requests: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        await request.read()
        if request.path.endswith("/sso/token"):
            return web.json_response({"access_token": "t", "expires_in": 3600})
        status, content_type, body = self.next
        headers = {"Content-Type": content_type} if content_type else {}
        return web.Response(status=status, body=body, headers=headers)


@dataclass
class ProviderRig:
    bg: Loop
    canned: Canned
    providers: Providers
    url: str
    namespace: str


@pytest.fixture(scope="module")
def provider_rig(bg: Loop, kubeconfig: str) -> Iterator[ProviderRig]:
    canned = Canned()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    namespace = f"t-fuzz-{uuid.uuid4().hex[:8]}"

    async def setup() -> tuple[web.AppRunner, k8s.ClusterClient, Providers]:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", canned.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        cluster = await k8s.ClusterClient.connect(ClusterSettings(kubeconfig=kubeconfig))
        await cluster.create(
            k8s.NAMESPACES,
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        )
        secret = {
            "DD_CLIENT_API_KEY": "api",
            "DD_CLIENT_APP_KEY": "app",
            "token": "dt0c01.TOKEN",
            "dql": DQL_SECRET,
        }
        await cluster.create(
            k8s.SECRETS,
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "creds"},
                "data": {k: base64.b64encode(v.encode()).decode() for k, v in secret.items()},
            },
            namespace,
        )
        transport = Transport(
            connections_per_target=8, max_response_bytes=64 * 1024, idle_seconds=600
        )
        providers = Providers.build(
            transport,
            SecretReader(cluster),
            dql_auth_url=f"{url}/sso/token",
            dql_poll_interval=0,
            dql_max_polls=2,
        )
        return runner, cluster, providers

    runner, cluster, providers = bg.run(setup())
    yield ProviderRig(bg, canned, providers, url, namespace)

    async def teardown() -> None:
        await providers.transport.close()
        with contextlib.suppress(k8s.ApiError):
            await cluster.delete(k8s.NAMESPACES, namespace)
        await cluster.close()
        await runner.cleanup()

    bg.run(teardown())


QUERIES = {
    "prometheus": "up",
    "thanos": "rate(x[1m])",
    "cortex": "up",
    "dynatrace": "builtin:service.response.time",
    "dql": "fetch logs | summarize count()",
    "datadog": "avg:system.cpu.user{*}",
    "elastic": '{"query": {"match_all": {}}}',
    "http": "/api/stats?from={{.from}} $.data.value",
}
SECRET_KEYS = {"dynatrace": "token", "dql": "dql", "datadog": None}


def near(shape: Any) -> st.SearchStrategy[Any]:
    """Values shaped like ``shape`` at every level, each level replaced by junk one time in ten
    (so that a good share of whole answers is well-formed and reaches the value parsing)."""
    junk = shaped_json(PROVIDER_KEYS)
    if shape == NUM:
        right: st.SearchStrategy[Any] = st.one_of(
            st.floats(),
            st.integers(),
            st.just(10**400),
            st.sampled_from(["1", "2.5", "-3e2", "NaN", "+Inf", "x", "", "1e999", str(10**400)]),
        )
    elif isinstance(shape, dict):
        right = st.fixed_dictionaries({k: near(v) for k, v in shape.items()})
    elif isinstance(shape, list) and len(shape) == 1:
        # Mostly exactly one item: what a single-valued query answers.
        item = near(shape[0])
        right = st.integers(0, 3).flatmap(
            lambda n: st.lists(item, min_size=1, max_size=1) if n else st.lists(item, max_size=3)
        )
    elif isinstance(shape, list):
        right = st.tuples(*(near(v) for v in shape)).map(list)
    else:
        right = st.just(shape)
    return st.integers(0, 9).flatmap(lambda n: junk if n == 9 else right)


def _found(kind: str, body: bytes) -> tuple[str, Query, tuple[int, str, bytes]]:
    query = Query(text=QUERIES[kind], end=datetime(2026, 1, 1, tzinfo=UTC))
    return kind, query, (200, "application/json", body)


@st.composite
def provider_cases(draw: st.DrawFn) -> tuple[str, Query, tuple[int, str, bytes]]:
    kind = draw(st.sampled_from(KNOWN_TYPES))
    end = datetime(2026, 1, 1, tzinfo=UTC)
    ranged = draw(st.booleans())
    series = ranged and draw(st.booleans()) and kind != "elastic"
    query = Query(
        text=QUERIES[kind],
        end=end,
        start=end - timedelta(minutes=5) if ranged else None,
        step=timedelta(minutes=1) if series else None,
        step_text="1m" if series else None,
        series=series,
        variables={"metricPath": draw(st.sampled_from(["", "hits.total.value", "aggregations"]))},
    )
    status = draw(st.sampled_from([200, 200, 200, 200, 202, 204, 400, 401, 404, 429, 500, 503]))
    content_type = draw(
        st.sampled_from(["application/json", "application/json", "text/plain", "text/html", ""])
    )
    shapes = [v for k, v in SHAPES.items() if k.startswith(kind.replace("thanos", "prometheus"))]
    if kind in ("thanos", "cortex"):
        shapes = [SHAPES["prometheus"], SHAPES["prometheus-range"]]
    body = draw(
        st.one_of(
            st.sampled_from(shapes).flatmap(near).map(lambda v: json.dumps(v).encode()),
            shaped_json(PROVIDER_KEYS).map(lambda v: json.dumps(v).encode()),
            st.binary(max_size=300),
            st.text(max_size=100).map(str.encode),
        )
    )
    return kind, query, (status, content_type, body)


def test_metric_provider_responses(
    provider_rig: ProviderRig, capsys: pytest.CaptureFixture[str]
) -> None:
    rig = provider_rig

    @FUZZ
    @given(case=provider_cases())
    # Answers that once crashed a provider instead of failing it with a message.
    @example(case=_found("prometheus", b'{"status": "success", "data": 1}'))
    @example(
        case=_found(
            "prometheus", b'{"status": "success", "data": {"resultType": "vector", "result": [7]}}'
        )
    )
    @example(case=_found("datadog", b'{"series": true}'))
    @example(case=_found("datadog", b'{"series": [{"pointlist": [[1, 1%s]]}]}' % (b"0" * 400)))
    @example(case=_found("dynatrace", b'{"result": true}'))
    @example(case=_found("dql", b'{"requestToken": true}'))
    @example(
        case=_found(
            "dql", b'{"state": "SUCCEEDED", "result": {"records": [{"v": 1%s}]}}' % (b"0" * 400)
        )
    )
    @example(case=_found("elastic", b'{"hits": {"total": {"value": 1%s}}}' % (b"0" * 400)))
    @example(case=_found("http", b'{"data": {"value": 1%s}}' % (b"0" * 400)))
    def prop(case: tuple[str, Query, tuple[int, str, bytes]]) -> None:
        kind, query, answer = case
        rig.canned.next = answer
        config = ProviderConfig(
            name="fuzz",
            namespace=rig.namespace,
            type=kind,
            target=rig.url,
            insecure=False,
            timeout=20,
            secret_name="creds" if kind in SECRET_KEYS else None,
            secret_key=SECRET_KEYS.get(kind),
            annotations={},
        )
        try:
            reading = rig.bg.run(rig.providers.fetch(config, query))
        except ProviderError as exc:
            _clear(exc)
            TALLY.count("metric-providers", f"{kind}:error")
            return
        assert reading.values, (kind, answer)
        assert all(isinstance(v, float) for v in reading.values)
        TALLY.count("metric-providers", f"{kind}:value")

    _run("metric-providers", prop, capsys)
    assert rig.canned.requests >= TALLY.cases["metric-providers"] // 2
