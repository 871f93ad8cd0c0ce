"""Every provider type against recorded answers in its real format, served over real HTTP.

Each test serves the backend's recorded response from an aiohttp server on 127.0.0.1, lets the
evaluator query it through a real KeptnMetricsProvider (with its Secret read from the real
apiserver), and checks both directions: what the evaluator sent (path, parameters, auth headers)
and what it wrote into the KeptnMetric's status. Secrets must never reach logs or errMsgs.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import logging
import ssl
import urllib.parse
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from evaluator_kit import (
    FakeProvider,
    StartEvaluator,
    make_metric,
    make_provider,
    make_secret,
    metric_status,
    wait_metric,
    wait_until,
)

from klt_common.clients import cluster as k8s

# --- recorded answers (shapes as the real APIs return them) ------------------------------------

DYNATRACE_ANSWER = {
    "totalCount": 1,
    "nextPageKey": None,
    "resolution": "1m",
    "result": [
        {
            "metricId": "builtin:service.response.time:splitBy():avg",
            "dataPointCountRatio": 6.0e-6,
            "dimensionCountRatio": 5.0e-5,
            "data": [
                {
                    "dimensions": [],
                    "dimensionMap": {},
                    "timestamps": [1700000040000, 1700000100000, 1700000160000],
                    "values": [1500.5, None, 1700.5],
                }
            ],
        }
    ],
}
DYNATRACE_TWO_SERIES = {
    "totalCount": 2,
    "resolution": "1m",
    "result": [
        {
            "metricId": "builtin:host.cpu.usage",
            "data": [
                {"dimensions": ["HOST-1"], "timestamps": [1], "values": [10.0]},
                {"dimensions": ["HOST-2"], "timestamps": [1], "values": [20.0]},
            ],
        }
    ],
}
DYNATRACE_ERROR = {"error": {"code": 400, "message": "The parameter metricSelector is invalid."}}

DQL_RESULT = {
    "state": "SUCCEEDED",
    "progress": 100,
    "result": {
        "records": [
            {
                "timeframe": {"start": "2024-01-01T00:00:00Z", "end": "2024-01-01T00:03:00Z"},
                "interval": "60000000000",
                "val": [10.0, 20.0, 30.5],
            }
        ],
        "types": [{"indexRange": [0, 0], "mappings": {"val": {"type": "array"}}}],
        "metadata": {"grail": {"canonicalQuery": "timeseries val = avg(dt.host.cpu.usage)"}},
    },
}

DATADOG_ANSWER = {
    "status": "ok",
    "res_type": "time_series",
    "resp_version": 1,
    "query": "avg:system.cpu.user{*}",
    "from_date": 1700000000000,
    "to_date": 1700000300000,
    "series": [
        {
            "unit": None,
            "query_index": 0,
            "aggr": "avg",
            "metric": "system.cpu.user",
            "tag_set": [],
            "expression": "avg:system.cpu.user{*}",
            "scope": "*",
            "interval": 20,
            "length": 3,
            "start": 1700000000000,
            "end": 1700000300000,
            "pointlist": [
                [1700000000000.0, 12.5],
                [1700000020000.0, None],
                [1700000040000.0, 13.5],
            ],
            "display_name": "system.cpu.user",
            "attributes": {},
        }
    ],
    "values": [],
    "times": [],
    "message": "",
    "group_by": [],
}

ELASTIC_ANSWER = {
    "took": 5,
    "timed_out": False,
    "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
    "hits": {"total": {"value": 120, "relation": "eq"}, "max_score": None, "hits": []},
    "aggregations": {"avg_latency": {"value": 231.75}},
}
ELASTIC_ERROR = {
    "error": {
        "root_cause": [{"type": "parsing_exception", "reason": "Unknown key for a START_OBJECT"}],
        "type": "parsing_exception",
        "reason": "Unknown key for a START_OBJECT in [foo].",
    },
    "status": 400,
}

PROMETHEUS_VECTOR = {
    "status": "success",
    "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1700000000.0, "0.25"]}]},
}

DT_TOKEN = (
    "dt0c01.ST2EY72KQINMH574WMNVI7YN."
    + "G3DFPBEJYMODIDAEX454M7YWBUVEFOWKPRVMWFASS64NFH52PX6BNDVFFM572RZM"
)
DQL_SECRET = "dt0s08.CLIENTID7." + "S" * 64
DD_API_KEY, DD_APP_KEY = "ddapi-1234567890abcdef", "ddapp-fedcba0987654321"
ELASTIC_KEY = "VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw=="
HTTP_TOKEN = "generic-token-4242"
SECRETS = (DT_TOKEN, DQL_SECRET, DD_API_KEY, DD_APP_KEY, ELASTIC_KEY, HTTP_TOKEN, "s3cr3t-pw")


@pytest.fixture
async def fake() -> AsyncIterator[FakeProvider]:
    server = await FakeProvider().start()
    yield server
    await server.stop()


def decoded_raw(status: dict[str, object]) -> bytes:
    return base64.b64decode(str(status["rawValue"]))


async def test_dynatrace_metrics_v2_with_api_token(
    cluster: k8s.ClusterClient,
    namespace: str,
    shard: str,
    fake: FakeProvider,
    evaluator: StartEvaluator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.answer("GET", "/api/v2/metrics/query", DYNATRACE_ANSWER)
    await make_secret(cluster, namespace, "dt", {"apiToken": DT_TOKEN})
    await make_provider(
        cluster,
        namespace,
        "dynatrace",
        fake.url,  # "/api/" is appended, as Keptn did
        type_="dynatrace",
        secretKeyRef={"name": "dt", "key": "apiToken"},
    )
    selector = "builtin:service.response.time:splitBy():avg"
    await make_metric(cluster, namespace, shard, "rt", selector, provider="dynatrace")
    await make_metric(
        cluster,
        namespace,
        shard,
        "rt-ranged",
        selector,
        provider="dynatrace",
        range_={"interval": "5m"},
    )
    await evaluator()
    # The mean of the non-null points (1500.5, 1700.5), with six decimals as Keptn wrote it.
    status = await wait_metric(cluster, namespace, "rt", value="1600.500000")
    assert json.loads(decoded_raw(status)) == DYNATRACE_ANSWER
    await wait_metric(cluster, namespace, "rt-ranged", value="1600.500000")
    plain = [s for s in fake.requests_to("/api/v2/metrics/query") if "from" not in s.query]
    ranged = [s for s in fake.requests_to("/api/v2/metrics/query") if "from" in s.query]
    assert plain[0].headers["Authorization"] == f"Api-Token {DT_TOKEN}"
    assert plain[0].query == {"metricSelector": selector}
    start, end = int(ranged[0].query["from"]), int(ranged[0].query["to"])
    assert end - start == 300_000  # epoch milliseconds, five minutes apart
    assert all(secret not in caplog.text for secret in SECRETS)


async def test_dynatrace_errors_and_ambiguous_answers(
    cluster: k8s.ClusterClient,
    namespace: str,
    shard: str,
    fake: FakeProvider,
    evaluator: StartEvaluator,
) -> None:
    other = await FakeProvider().start()
    try:
        fake.answer("GET", "/api/v2/metrics/query", DYNATRACE_ERROR, status=400)
        other.answer("GET", "/api/v2/metrics/query", DYNATRACE_TWO_SERIES)
        await make_secret(cluster, namespace, "dt", {"apiToken": DT_TOKEN, "other": ""})
        ref = {"name": "dt", "key": "apiToken"}
        await make_provider(
            cluster, namespace, "bad", fake.url, type_="dynatrace", secretKeyRef=ref
        )
        await make_provider(
            cluster, namespace, "two", other.url + "/api", type_="dynatrace", secretKeyRef=ref
        )
        await make_provider(
            cluster,
            namespace,
            "wrong-key",
            fake.url,
            type_="dynatrace",
            secretKeyRef={"name": "dt", "key": "token"},
        )
        await make_provider(cluster, namespace, "no-secret", fake.url, type_="dynatrace")
        for name in ("bad", "two", "wrong-key", "no-secret"):
            await make_metric(cluster, namespace, shard, name, "x", provider=name)
        await evaluator()
        status = await wait_metric(cluster, namespace, "bad", value="")
        assert status["errMsg"] == "provider api response: The parameter metricSelector is invalid."
        assert json.loads(decoded_raw(status)) == DYNATRACE_ERROR
        await wait_metric(cluster, namespace, "two", errMsg="too many values in query result")
        await wait_metric(
            cluster, namespace, "wrong-key", errMsg="secret 'dt' contains no key 'token'"
        )
        await wait_metric(
            cluster,
            namespace,
            "no-secret",
            errMsg="the SecretKeyRef property with the Dynatrace token is missing",
        )
    finally:
        await other.stop()


async def test_dql_oauth_execute_and_poll(
    cluster: k8s.ClusterClient,
    namespace: str,
    shard: str,
    fake: FakeProvider,
    evaluator: StartEvaluator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.answer(
        "POST",
        "/sso/oauth2/token",
        {
            "scope": "storage:metrics:read environment:roles:viewer",
            "token_type": "Bearer",
            "expires_in": 300,
            "access_token": "eyJhbGciOiJIUzI1NiJ9.access",
        },
    )
    fake.answer(
        "POST",
        "/platform/storage/query/v1/query:execute",
        {"requestToken": "req-123", "ttlSeconds": 900},
        status=202,
    )
    polls = 0

    async def poll(_request: web.Request) -> web.Response:
        nonlocal polls
        polls += 1
        if polls == 1:
            return web.json_response({"state": "RUNNING", "progress": 50})
        return web.json_response(DQL_RESULT)

    fake.on("GET", "/platform/storage/query/v1/query:poll", poll)
    await make_secret(cluster, namespace, "dql", {"clientSecret": DQL_SECRET})
    await make_provider(
        cluster,
        namespace,
        "grail",
        fake.url,
        type_="dql",
        secretKeyRef={"name": "dql", "key": "clientSecret"},
    )
    await make_metric(
        cluster,
        namespace,
        shard,
        "cpu",
        "timeseries val = avg(dt.host.cpu.usage)",
        provider="grail",
        interval=60,
    )
    await evaluator(dql_auth_url=f"{fake.url}/sso/oauth2/token")
    # The last point of the record's one numeric array, as Keptn's provider read it.
    await wait_metric(cluster, namespace, "cpu", value="30.500000")
    token_request = fake.requests_to("/sso/oauth2/token")[0]
    form = dict(urllib.parse.parse_qsl(token_request.body.decode()))
    assert form == {
        "grant_type": "client_credentials",
        "scope": "storage:metrics:read environment:roles:viewer",
        "client_id": "dt0s08.CLIENTID7",
        "client_secret": DQL_SECRET,
    }
    execute = fake.requests_to("/platform/storage/query/v1/query:execute")[0]
    assert execute.headers["Authorization"] == "Bearer eyJhbGciOiJIUzI1NiJ9.access"
    assert json.loads(execute.body)["query"] == "timeseries val = avg(dt.host.cpu.usage)"
    poll_request = fake.requests_to("/platform/storage/query/v1/query:poll")[-1]
    assert poll_request.query == {"request-token": "req-123"}
    assert all(secret not in caplog.text for secret in SECRETS)


async def test_datadog_v1_query_with_api_and_application_keys(
    cluster: k8s.ClusterClient,
    namespace: str,
    shard: str,
    fake: FakeProvider,
    evaluator: StartEvaluator,
) -> None:
    fake.answer("GET", "/api/v1/query", DATADOG_ANSWER)
    await make_secret(
        cluster, namespace, "dd", {"DD_CLIENT_API_KEY": DD_API_KEY, "DD_CLIENT_APP_KEY": DD_APP_KEY}
    )
    await make_secret(cluster, namespace, "dd-wrong", {"api_key": DD_API_KEY})
    await make_provider(
        cluster,
        namespace,
        "datadog",
        fake.url,
        type_="datadog",
        secretKeyRef={"name": "dd", "key": "x"},
    )
    await make_provider(
        cluster,
        namespace,
        "dd-wrong",
        fake.url,
        type_="datadog",
        secretKeyRef={"name": "dd-wrong", "key": "x"},
    )
    await make_metric(
        cluster, namespace, shard, "cpu", "avg:system.cpu.user{*}", provider="datadog"
    )
    await make_metric(cluster, namespace, shard, "bad-keys", "avg:x{*}", provider="dd-wrong")
    await evaluator()
    await wait_metric(cluster, namespace, "cpu", value="13")  # mean of 12.5 and 13.5
    seen = fake.requests_to("/api/v1/query")[0]
    assert seen.headers["DD-API-KEY"] == DD_API_KEY
    assert seen.headers["DD-APPLICATION-KEY"] == DD_APP_KEY
    assert seen.query["query"] == "avg:system.cpu.user{*}"
    assert int(seen.query["to"]) - int(seen.query["from"]) == 300  # Keptn's default window
    status = await wait_metric(cluster, namespace, "bad-keys", value="")
    assert status["errMsg"] == (
        "secret 'dd-wrong' does not contain DD_CLIENT_API_KEY or DD_CLIENT_APP_KEY"
    )


async def test_elasticsearch_search_with_api_key(
    cluster: k8s.ClusterClient,
    namespace: str,
    shard: str,
    fake: FakeProvider,
    evaluator: StartEvaluator,
) -> None:
    fake.answer("POST", "/logs-app/_search", ELASTIC_ANSWER)
    fake.answer("POST", "/broken/_search", ELASTIC_ERROR, status=400)
    await make_secret(cluster, namespace, "es", {"apiKey": ELASTIC_KEY})
    ref = {"name": "es", "key": "apiKey"}
    await make_provider(
        cluster, namespace, "es", fake.url + "/logs-app", type_="elastic", secretKeyRef=ref
    )
    await make_provider(
        cluster, namespace, "es-broken", fake.url + "/broken", type_="elastic", secretKeyRef=ref
    )
    search = {
        "size": 0,
        "query": {"range": {"@timestamp": {"gte": "now-5m"}}},
        "aggs": {"avg_latency": {"avg": {"field": "latency_ms"}}},
    }
    await make_metric(cluster, namespace, shard, "latency", json.dumps(search), provider="es")
    await make_metric(cluster, namespace, shard, "broken", json.dumps(search), provider="es-broken")
    await make_metric(cluster, namespace, shard, "not-json", "latency_ms:>5", provider="es")
    await evaluator()
    await wait_metric(cluster, namespace, "latency", value="231.75")
    seen = fake.requests_to("/logs-app/_search")[0]
    assert seen.headers["Authorization"] == f"ApiKey {ELASTIC_KEY}"
    assert json.loads(seen.body) == search
    status = await wait_metric(cluster, namespace, "broken", value="")
    assert status["errMsg"] == (
        "provider api response: parsing_exception: Unknown key for a START_OBJECT in [foo]."
    )
    status = await wait_metric(cluster, namespace, "not-json", value="")
    assert status["errMsg"].startswith("the elastic query is not a JSON search body")


async def test_generic_http_provider_with_url_template_and_jsonpath(
    cluster: k8s.ClusterClient,
    namespace: str,
    shard: str,
    fake: FakeProvider,
    evaluator: StartEvaluator,
) -> None:
    fake.answer(
        "GET",
        "/api/stats",
        {"service": "cart", "latency": {"p95": 0.231, "p99": "0.4"}, "points": [1, 5, 3, 9, 2]},
    )
    await make_secret(cluster, namespace, "tok", {"token": HTTP_TOKEN})
    generic = {"evaluator.klt.sh/provider-type": "http"}
    await make_provider(
        cluster,
        namespace,
        "stats",
        fake.url,
        annotations=generic,
        secretKeyRef={"name": "tok", "key": "token"},
    )
    await make_provider(
        cluster,
        namespace,
        "stats-header",
        fake.url,
        annotations={**generic, "evaluator.klt.sh/auth-header": "X-Api-Key"},
        secretKeyRef={"name": "tok", "key": "token"},
    )
    await make_metric(
        cluster, namespace, shard, "p95", "/api/stats?service=cart $.latency.p95", provider="stats"
    )
    await make_metric(
        cluster,
        namespace,
        shard,
        "p99",
        "/api/stats?since={{.from}} $.latency.p99",
        provider="stats-header",
        range_={"interval": "10m"},
    )
    await make_metric(
        cluster,
        namespace,
        shard,
        "points-p90",
        "/api/stats $.points",
        provider="stats",
        range_={"interval": "1m", "step": "10s", "aggregation": "p90"},
    )
    await make_metric(cluster, namespace, shard, "missing", "/api/stats $.nope", provider="stats")
    await make_metric(cluster, namespace, shard, "two", "/api/stats $.latency.*", provider="stats")
    await make_metric(cluster, namespace, shard, "text", "/api/stats $.service", provider="stats")
    await make_metric(cluster, namespace, shard, "syntax", "/api/stats", provider="stats")
    await make_metric(
        cluster, namespace, shard, "elsewhere", "http://example.com/x $.a", provider="stats"
    )
    await evaluator()
    await wait_metric(cluster, namespace, "p95", value="0.231")
    await wait_metric(cluster, namespace, "p99", value="0.4")
    await wait_metric(cluster, namespace, "points-p90", value="9")  # nearest rank: ceil(4.5) = 5th
    await wait_metric(cluster, namespace, "missing", errMsg="no values in query result")
    await wait_metric(cluster, namespace, "two", errMsg="too many values in query result")
    await wait_metric(
        cluster, namespace, "text", errMsg="the value at $.service ('cart') is not a number"
    )
    status = await wait_metric(cluster, namespace, "syntax", value="")
    assert status["errMsg"].startswith("the http provider's query is '<url> <jsonpath>'")
    status = await wait_metric(cluster, namespace, "elsewhere", value="")
    assert status["errMsg"].startswith("the query URL must stay on the provider's target")
    plain = next(s for s in fake.requests_to("/api/stats") if s.query.get("service") == "cart")
    assert plain.headers["Authorization"] == f"Bearer {HTTP_TOKEN}"
    templated = next(s for s in fake.requests_to("/api/stats") if "since" in s.query)
    assert templated.headers["X-Api-Key"] == HTTP_TOKEN
    assert "Authorization" not in templated.headers
    assert templated.query["since"].isdigit()


async def test_thanos_with_basic_auth_and_wrong_secret_keys(
    cluster: k8s.ClusterClient,
    namespace: str,
    shard: str,
    fake: FakeProvider,
    evaluator: StartEvaluator,
) -> None:
    fake.answer("POST", "/api/v1/query", PROMETHEUS_VECTOR)
    await make_secret(cluster, namespace, "basic", {"user": "keptn", "password": "s3cr3t-pw"})
    await make_secret(cluster, namespace, "half", {"user": "keptn"})
    await make_provider(
        cluster,
        namespace,
        "thanos",
        fake.url,
        type_="thanos",
        secretKeyRef={"name": "basic", "key": "x"},
    )
    await make_provider(
        cluster,
        namespace,
        "cortex",
        fake.url,
        type_="cortex",
        secretKeyRef={"name": "half", "key": "x"},
    )
    await make_provider(
        cluster,
        namespace,
        "gone",
        fake.url,
        type_="thanos",
        secretKeyRef={"name": "nope", "key": "x"},
    )
    await make_metric(cluster, namespace, shard, "ok", "up", provider="thanos")
    await make_metric(cluster, namespace, shard, "half", "up", provider="cortex")
    await make_metric(cluster, namespace, shard, "gone", "up", provider="gone")
    await evaluator()
    await wait_metric(cluster, namespace, "ok", value="0.25")
    seen = fake.requests_to("/api/v1/query")[0]
    expected = base64.b64encode(b"keptn:s3cr3t-pw").decode()
    assert seen.headers["Authorization"] == f"Basic {expected}"
    assert dict(urllib.parse.parse_qsl(seen.body.decode()))["query"] == "up"
    await wait_metric(
        cluster,
        namespace,
        "half",
        errMsg="secret 'half' does not contain the keys user and password",
    )
    await wait_metric(
        cluster, namespace, "gone", errMsg=f"secret 'nope' not found in namespace {namespace}"
    )


async def test_unknown_types_and_slow_providers_give_an_err_msg_without_stalling_others(
    cluster: k8s.ClusterClient,
    namespace: str,
    shard: str,
    fake: FakeProvider,
    evaluator: StartEvaluator,
) -> None:
    async def slow(_request: web.Request) -> web.Response:
        await asyncio.sleep(3)
        return web.json_response(PROMETHEUS_VECTOR)

    fake.on("POST", "/slow/api/v1/query", slow)
    fake.answer("POST", "/fast/api/v1/query", PROMETHEUS_VECTOR)
    await make_provider(
        cluster,
        namespace,
        "slow",
        fake.url + "/slow",
        type_="prometheus",
        annotations={"evaluator.klt.sh/timeout": "300ms"},
    )
    await make_provider(cluster, namespace, "fast", fake.url + "/fast", type_="prometheus")
    # No spec.type: the type is the provider's name, as in Keptn; "influx" is no known type.
    await make_provider(cluster, namespace, "influx", fake.url)
    await make_metric(cluster, namespace, shard, "slow", "up", provider="slow")
    await make_metric(cluster, namespace, shard, "fast", "up", provider="fast")
    await make_metric(cluster, namespace, shard, "influx", "up", provider="influx")
    await evaluator()
    status = await wait_metric(cluster, namespace, "slow", value="")
    assert status["errMsg"] == f"prometheus provider at {fake.url} did not answer within 0.3s"
    status = await wait_metric(cluster, namespace, "influx", value="")
    assert status["errMsg"].startswith("provider type 'influx' is not supported (known: prometheus")
    # The fast metric keeps its one-second cadence while the slow one times out.
    await wait_metric(cluster, namespace, "fast", value="0.25")
    before = len(fake.requests_to("/fast/api/v1/query"))
    slow_before = len(fake.requests_to("/slow/api/v1/query"))
    await asyncio.sleep(3.5)
    assert len(fake.requests_to("/fast/api/v1/query")) >= before + 2
    # Retried on its one-second interval (3-4 tries in 3.5 s), never in a hot loop.
    assert 2 <= len(fake.requests_to("/slow/api/v1/query")) - slow_before <= 5
    assert (await metric_status(cluster, namespace, "slow"))["errMsg"].endswith("within 0.3s")


def _self_signed(workdir: Path) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    (workdir / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (workdir / "tls.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(workdir / "tls.crt", workdir / "tls.key")
    return context


async def test_tls_is_verified_unless_the_provider_skips_verification(
    cluster: k8s.ClusterClient,
    namespace: str,
    shard: str,
    evaluator: StartEvaluator,
    tmp_path: Path,
) -> None:
    server = await FakeProvider().start(ssl_context=_self_signed(tmp_path))
    try:
        server.answer("POST", "/api/v1/query", PROMETHEUS_VECTOR)
        url = f"https://127.0.0.1:{server.port}"
        await make_provider(cluster, namespace, "verified", url, type_="prometheus")
        await make_provider(
            cluster, namespace, "trusting", url, type_="prometheus", insecureSkipTlsVerify=True
        )
        await make_metric(cluster, namespace, shard, "verified", "up", provider="verified")
        await make_metric(cluster, namespace, shard, "trusting", "up", provider="trusting")
        running = await evaluator()
        status = await wait_metric(cluster, namespace, "verified", value="")
        assert status["errMsg"].startswith(f"TLS error talking to prometheus provider at {url}")
        await wait_metric(cluster, namespace, "trusting", value="0.25")
        # Same target, two TLS settings: two sessions; never one per metric or per fetch.
        _, text = await running.get("/metrics")
        assert "klt_evaluator_provider_sessions 2.0" in text
    finally:
        await server.stop()


async def test_secrets_are_read_live_so_a_rotated_token_is_used_at_once(
    cluster: k8s.ClusterClient,
    namespace: str,
    shard: str,
    fake: FakeProvider,
    evaluator: StartEvaluator,
) -> None:
    fake.answer("GET", "/v", {"value": 1})
    await make_secret(cluster, namespace, "tok", {"token": "old-token"})
    await make_provider(
        cluster,
        namespace,
        "web",
        fake.url,
        annotations={"evaluator.klt.sh/provider-type": "http"},
        secretKeyRef={"name": "tok", "key": "token"},
    )
    await make_metric(cluster, namespace, shard, "v", "/v $.value", provider="web")
    await evaluator()
    await wait_metric(cluster, namespace, "v", value="1")
    assert fake.requests_to("/v")[0].headers["Authorization"] == "Bearer old-token"
    await cluster.patch(
        k8s.SECRETS,
        "tok",
        {"data": {"token": base64.b64encode(b"new-token").decode()}},
        namespace,
    )

    async def rotated() -> bool:
        return fake.requests_to("/v")[-1].headers["Authorization"] == "Bearer new-token"

    await wait_until(rotated, timeout=10)
