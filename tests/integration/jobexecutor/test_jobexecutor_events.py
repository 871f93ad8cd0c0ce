"""The job executor on the local stack: real Kafka topics in and out, real Jobs whose busybox
processes the node agent runs, logs read back through ``pods/log``.

Each test runs the job executor in-process (its own topic prefix, consumer group and
namespace), configures it with a ConfigMap, publishes Keptn CloudEvents and asserts on what it
answers, on the Jobs it created and on what the processes printed.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import uuid
from typing import Any

import pytest
from jes_kit import (
    action,
    configure,
    jobs_of,
    keptn_event,
    outbox,
    publish,
    running,
    settings_for,
    shell_task,
    v2,
)

from klt_common.clients import cluster as k8s
from klt_common.configs.settings import BusSettings, ClusterSettings

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture
def settings(bus_settings: BusSettings, cluster_settings: ClusterSettings, namespace: str) -> Any:
    return settings_for(bus_settings, cluster_settings, namespace)


def _kinds(replies: list[dict[str, Any]]) -> list[str]:
    return [r["type"].rsplit(".", 1)[1] for r in replies]


async def test_a_matching_event_runs_its_tasks_in_order_and_reports_started_then_finished(
    cluster: k8s.ClusterClient, namespace: str, bus_settings: BusSettings, settings: Any
) -> None:
    await configure(
        cluster,
        namespace,
        v2(
            {
                "name": "Run tests",
                "events": [
                    {
                        "name": "sh.keptn.event.test.triggered",
                        "jsonpath": {"property": "$.data.test.teststrategy", "match": "health"},
                    }
                ],
                "tasks": [
                    shell_task("first", "echo first-ran-in-$KEPTN_STAGE"),
                    shell_task("second", "echo second-ran-for-$KEPTN_SERVICE"),
                ],
            }
        ),
    )
    event = keptn_event(test={"teststrategy": "health"}, labels={"build-id": "17"})
    async with outbox(bus_settings) as box, running(settings):
        await publish(bus_settings, event)
        finished = await box.finished(event["id"])
    replies = box.replies_to(event["id"])
    assert _kinds(replies) == ["started", "finished"]
    started = replies[0]
    assert started["type"] == "sh.keptn.event.test.started"
    assert started["source"] == "job-executor-service"
    assert started["shkeptncontext"] == event["shkeptncontext"]
    assert started["data"] == {
        "project": "sockshop",
        "stage": "dev",
        "service": "carts",
        "labels": {"build-id": "17"},
    }
    data = finished["data"]
    assert (data["status"], data["result"]) == ("succeeded", "pass")
    message = data["message"]
    assert message.index("Task 'first' finished successfully!") < message.index(
        "Task 'second' finished successfully!"
    )
    assert "first-ran-in-dev" in message
    assert "second-ran-for-carts" in message
    assert data["test"]["start"] <= data["test"]["end"]
    # Keyed by the Keptn context, so that one context's events stay in order.
    [key] = {r.key for r in box.records if json.loads(r.value)["triggeredid"] == event["id"]}
    assert key == event["shkeptncontext"].encode()

    jobs = await jobs_of(cluster, namespace, event["id"])
    assert [j["metadata"]["name"] for j in jobs] == [
        f"job-executor-service-job-{event['id'][:24]}-000-001",
        f"job-executor-service-job-{event['id'][:24]}-000-002",
    ]
    labels = jobs[0]["metadata"]["labels"]
    assert labels["keptn.sh/context"] == event["shkeptncontext"]
    assert labels["keptn.sh/jes-action"] == "Run_tests"
    assert labels["keptn.sh/jes-task-index"] == "0"
    assert len(labels["keptn.sh/jes-job-confighash"]) == 56
    spec = jobs[0]["spec"]
    assert spec["backoffLimit"] == 0
    assert spec["template"]["spec"]["automountServiceAccountToken"] is False


async def test_events_that_match_no_action_create_nothing_and_get_no_answer(
    cluster: k8s.ClusterClient, namespace: str, bus_settings: BusSettings, settings: Any
) -> None:
    await configure(
        cluster,
        namespace,
        v2(
            {
                "name": "locust only",
                "events": [
                    {
                        "name": "sh.keptn.event.test.triggered",
                        "jsonpath": {"property": "$.data.test.teststrategy", "match": "locust"},
                    }
                ],
                "tasks": [shell_task("locust", "echo locust-ran")],
            },
            action("deployments", [shell_task("deploy", "echo deployed")], "deployment.triggered"),
        ),
    )
    context = str(uuid.uuid4())
    wrong_strategy = keptn_event(context=context, test={"teststrategy": "health"})
    numeric = keptn_event(context=context, test={"teststrategy": 4711})
    other_task = keptn_event("sh.keptn.event.action.triggered", context=context)
    # Same context, so same partition: once the last one is answered, the others were handled.
    marker = keptn_event("sh.keptn.event.deployment.triggered", context=context)
    async with outbox(bus_settings) as box, running(settings):
        await publish(bus_settings, wrong_strategy, numeric, other_task, marker)
        finished = await box.finished(marker["id"])
    assert finished["data"]["result"] == "pass"
    for ignored in (wrong_strategy, numeric, other_task):
        assert box.replies_to(ignored["id"]) == []
        assert await jobs_of(cluster, namespace, ignored["id"]) == []


async def test_env_from_event_secret_and_string_reaches_the_process_and_secrets_stay_masked(
    cluster: k8s.ClusterClient, namespace: str, bus_settings: BusSettings, settings: Any
) -> None:
    secret_value = f"s3cr3t-{uuid.uuid4().hex[:8]}"
    await cluster.create(
        k8s.SECRETS,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "api-credentials"},
            "data": {
                "API_TOKEN": base64.b64encode(secret_value.encode()).decode(),
                "API_USER": base64.b64encode(b"robot").decode(),
            },
        },
        namespace,
    )
    script = "; ".join(
        [
            'echo "host=$HOST"',
            'echo "strategy-json=$STRATEGY_JSON"',
            'printf "urls-yaml:\\n%s" "$URLS_YAML"',
            'echo "urls-plain=$URLS"',
            'echo "data-dir=$DATA_DIR"',
            'echo "keptn=$KEPTN_PROJECT/$KEPTN_STAGE/$KEPTN_SERVICE"',
            'echo "label=$LABELS_BUILD_ID"',
            '[ "$API_USER" = robot ] && echo user-matches',
            'echo "user=$API_USER"',
            'printf "%s" "$API_TOKEN" | sha256sum',
            'echo "token=$API_TOKEN"',
        ]
    )
    env = [
        {"name": "HOST", "value": "$.data.deployment.deploymentURIsLocal[0]", "valueFrom": "event"},
        {"name": "STRATEGY_JSON", "value": "$.data.test", "valueFrom": "event", "as": "json"},
        {
            "name": "URLS_YAML",
            "value": "$.data.deployment.deploymentURIsLocal",
            "valueFrom": "event",
            "as": "yaml",
        },
        {"name": "URLS", "value": "$.data.deployment.deploymentURIsLocal", "valueFrom": "event"},
        {"name": "DATA_DIR", "value": "/tmp/data", "valueFrom": "string"},
        {"name": "api-credentials", "valueFrom": "secret"},
    ]
    await configure(cluster, namespace, v2(action("env", [shell_task("print", script, env=env)])))
    event = keptn_event(
        labels={"build-id": "build-17"},
        test={"teststrategy": "health"},
        deployment={"deploymentURIsLocal": ["https://keptn.sh", "https://keptn2.sh"]},
    )
    async with outbox(bus_settings) as box, running(settings):
        await publish(bus_settings, event)
        finished = await box.finished(event["id"])
    message = finished["data"]["message"]
    assert finished["data"]["result"] == "pass", message
    assert "host=https://keptn.sh\n" in message
    assert 'strategy-json={"teststrategy":"health"}\n' in message
    assert "urls-yaml:\n- https://keptn.sh\n- https://keptn2.sh\n" in message
    assert "urls-plain=[https://keptn.sh https://keptn2.sh]\n" in message
    assert "data-dir=/tmp/data\n" in message
    assert "keptn=sockshop/dev/carts\n" in message
    assert "label=build-17\n" in message
    assert "user-matches\nuser=***\n" in message  # every value of the Secret is masked
    # The process saw the real value…
    assert hashlib.sha256(secret_value.encode()).hexdigest() in message
    assert "token=***\n" in message  # …which the report masks
    for record in box.records:
        assert secret_value.encode() not in record.value
    [job] = await jobs_of(cluster, namespace, event["id"])
    container = job["spec"]["template"]["spec"]["containers"][0]
    refs = [e for e in container["env"] if "valueFrom" in e]
    assert refs == [
        {"name": key, "valueFrom": {"secretKeyRef": {"name": "api-credentials", "key": key}}}
        for key in ("API_TOKEN", "API_USER")
    ]
    assert secret_value not in json.dumps(job)


async def test_a_missing_secret_event_key_or_namespace_fails_the_task_before_any_job(
    cluster: k8s.ClusterClient, namespace: str, bus_settings: BusSettings, settings: Any
) -> None:
    await configure(
        cluster,
        namespace,
        v2(
            action(
                "broken env",
                [shell_task("t", "true", env=[{"name": "nope", "valueFrom": "secret"}])],
            ),
            action(
                "broken path",
                [
                    shell_task(
                        "t",
                        "true",
                        env=[{"name": "X", "value": "$.data.missing", "valueFrom": "event"}],
                    )
                ],
                "sh.keptn.event.action.triggered",
            ),
            action(
                "nowhere",
                [shell_task("t", "true", namespace="no-such-namespace", files=["f.txt"])],
                "sh.keptn.event.release.triggered",
            ),
        ),
        files={"f.txt": "x"},
    )
    secret_case = keptn_event()
    path_case = keptn_event("sh.keptn.event.action.triggered")
    namespace_case = keptn_event("sh.keptn.event.release.triggered")
    async with outbox(bus_settings) as box, running(settings):
        await publish(bus_settings, secret_case, path_case, namespace_case)
        secret_finished = await box.finished(secret_case["id"])
        path_finished = await box.finished(path_case["id"])
        namespace_finished = await box.finished(namespace_case["id"])
    assert secret_finished["data"]["result"] == "fail"
    assert (
        "Error while creating job: could not add env with name nope, valueFrom secret: "
        'secrets "nope" not found'
    ) in secret_finished["data"]["message"]
    assert "unknown key missing" in path_finished["data"]["message"]
    assert (
        'Error while creating job: 404 NotFound: namespaces "no-such-namespace" not found'
        in (namespace_finished["data"]["message"])
    )
    assert await jobs_of(cluster, namespace, secret_case["id"]) == []
    assert await jobs_of(cluster, namespace, path_case["id"]) == []


async def test_files_are_mounted_under_keptn_with_their_paths_and_keptn_stays_writable(
    cluster: k8s.ClusterClient, namespace: str, bus_settings: BusSettings, settings: Any
) -> None:
    script = (
        "cat /keptn/locust/locust.conf; cat /keptn/locust/basic.py; "
        "sh /keptn/scripts/hello.sh; "
        "echo written > /keptn/out.txt && cat /keptn/out.txt"
    )
    await configure(
        cluster,
        namespace,
        v2(
            action(
                "files",
                [shell_task("read", script, files=["/locust", "scripts/hello.sh"])],
            )
        ),
        files={
            "locust__locust.conf": "conf-line-1\n",
            "locust__basic.py": "print('basic')\n",
            "scripts__hello.sh": "echo hello-from-a-mounted-script\n",
            "unrelated.txt": "not mounted\n",
        },
    )
    # The service "other" has its own (service-level) configuration, naming a missing file.
    missing_config = v2(
        action("missing", [shell_task("read", "true", files=["nothing/here"])], "action")
    )
    await configure(
        cluster, namespace, missing_config, name="other-config", stage="dev", service="other"
    )
    event = keptn_event()
    async with outbox(bus_settings) as box, running(settings):
        await publish(bus_settings, event)
        finished = await box.finished(event["id"])
        message = finished["data"]["message"]
        assert finished["data"]["result"] == "pass", message
        assert "conf-line-1\n" in message
        assert "print('basic')\n" in message
        assert "hello-from-a-mounted-script\n" in message
        assert "written\n" in message

        other = keptn_event("sh.keptn.event.action.triggered")
        other["data"]["service"] = "other"
        await publish(bus_settings, other)
        failed = await box.finished(other["id"])
    assert failed["data"]["result"] == "fail"
    assert (
        "could not find file or directory nothing/here for task read" in (failed["data"]["message"])
    )
    [job] = await jobs_of(cluster, namespace, event["id"])
    files_cm = await cluster.get(k8s.CONFIGMAPS, f"{job['metadata']['name']}-files", namespace)
    assert sorted(files_cm["data"]) == [
        "locust__basic.py",
        "locust__locust.conf",
        "scripts__hello.sh",
    ]
    [owner] = files_cm["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"]) == ("Job", job["metadata"]["uid"])


async def test_silent_actions_run_but_send_nothing(
    cluster: k8s.ClusterClient, namespace: str, bus_settings: BusSettings, settings: Any
) -> None:
    await configure(
        cluster,
        namespace,
        v2(
            action(
                "notify", [shell_task("n", "echo silently")], "sh.keptn.event.test", silent=True
            ),
            action("run", [shell_task("r", "echo loudly")], "sh.keptn.event.deployment.triggered"),
        ),
    )
    context = str(uuid.uuid4())
    silent_triggered = keptn_event(context=context)
    silent_finished = keptn_event("sh.keptn.event.test.finished", context=context)
    marker = keptn_event("sh.keptn.event.deployment.triggered", context=context)
    async with outbox(bus_settings) as box, running(settings):
        await publish(bus_settings, silent_triggered, silent_finished, marker)
        await box.finished(marker["id"])
    assert box.replies_to(silent_triggered["id"]) == []
    assert box.replies_to(silent_finished["id"]) == []
    for event in (silent_triggered, silent_finished):
        [job] = await jobs_of(cluster, namespace, event["id"])
        conditions = {c["type"] for c in job["status"].get("conditions", [])}
        assert "Complete" in conditions


async def test_a_failing_middle_task_stops_the_action_and_reports_its_logs(
    cluster: k8s.ClusterClient, namespace: str, bus_settings: BusSettings, settings: Any
) -> None:
    await configure(
        cluster,
        namespace,
        v2(
            action(
                "three steps",
                [
                    shell_task("prepare", "echo prepared"),
                    shell_task("check", "echo about-to-fail; exit 3"),
                    shell_task("cleanup", "echo must-not-run"),
                ],
            )
        ),
    )
    event = keptn_event()
    async with outbox(bus_settings) as box, running(settings):
        await publish(bus_settings, event)
        finished = await box.finished(event["id"])
    data = finished["data"]
    assert (data["status"], data["result"]) == ("errored", "fail")
    message = data["message"]
    assert "Task 'prepare' finished successfully!" in message
    assert "prepared" in message
    assert "Task 'check' failed: job job-executor-service-job-" in message
    assert "failed. Reason: BackoffLimitExceeded" in message
    assert "terminated with an error (Reason: Error, ExitCode: 3):\nabout-to-fail\n" in message
    assert "cleanup" not in message
    assert "must-not-run" not in message
    jobs = await jobs_of(cluster, namespace, event["id"])
    assert [j["metadata"]["labels"]["keptn.sh/jes-task"] for j in jobs] == ["prepare", "check"]


async def test_a_disallowed_image_fails_the_action_before_any_job(
    cluster: k8s.ClusterClient, namespace: str, bus_settings: BusSettings, settings: Any
) -> None:
    await configure(
        cluster,
        namespace,
        v2(
            action(
                "mine",
                [
                    shell_task("fine", "echo fine"),
                    shell_task("miner", "mine", image="evil.example/miner:latest"),
                ],
            )
        ),
    )
    event = keptn_event()
    async with outbox(bus_settings) as box, running(settings):
        await publish(bus_settings, event)
        finished = await box.finished(event["id"])
    assert finished["data"]["result"] == "fail"
    assert finished["data"]["message"] == (
        "Forbidden: Image evil.example/miner:latest does not match configured image allowlist.\n"
    )
    assert await jobs_of(cluster, namespace, event["id"]) == []


async def test_without_a_config_a_triggered_event_is_failed_and_others_are_ignored(
    cluster: k8s.ClusterClient, namespace: str, bus_settings: BusSettings, settings: Any
) -> None:
    context = str(uuid.uuid4())
    triggered = keptn_event(context=context, project="unconfigured")
    not_triggered = keptn_event("sh.keptn.event.test.finished", context=context)
    marker = keptn_event("sh.keptn.event.test.triggered", context=context)
    async with outbox(bus_settings) as box, running(settings):
        await publish(bus_settings, triggered, not_triggered, marker)
        finished = await box.finished(triggered["id"])
        await box.finished(marker["id"])
    assert _kinds(box.replies_to(triggered["id"])) == ["started", "finished"]
    data = finished["data"]
    assert (data["status"], data["result"], data["project"]) == ("errored", "fail", "unconfigured")
    assert data["message"] == (
        "could not retrieve config for job-executor-service: error retrieving job config: "
        "unable to find job configuration"
    )
    assert box.replies_to(not_triggered["id"]) == []


async def test_an_invalid_config_fails_the_event_with_the_path_of_the_error(
    cluster: k8s.ClusterClient, namespace: str, bus_settings: BusSettings, settings: Any
) -> None:
    await configure(
        cluster,
        namespace,
        "apiVersion: v2\nactions:\n  - name: a\n    tasks:\n      - name: t\n        cmd: ls\n",
    )
    event = keptn_event()
    async with outbox(bus_settings) as box, running(settings):
        await publish(bus_settings, event)
        finished = await box.finished(event["id"])
    assert finished["data"]["result"] == "fail"
    assert "actions[0].tasks[0].cmd: Input should be a valid list" in finished["data"]["message"]


async def test_waiting_is_bounded_by_max_poll_duration(
    cluster: k8s.ClusterClient, namespace: str, bus_settings: BusSettings, settings: Any
) -> None:
    await configure(
        cluster,
        namespace,
        v2(
            action(
                "slow",
                [shell_task("endless", "echo started-sleeping; sleep 60", maxPollDuration=3)],
                "sh.keptn.event.deployment.triggered",
            )
        ),
    )
    event = keptn_event("sh.keptn.event.deployment.triggered")
    async with outbox(bus_settings) as box, running(settings):
        started = asyncio.get_running_loop().time()
        await publish(bus_settings, event)
        finished = await box.finished(event["id"])
        elapsed = asyncio.get_running_loop().time() - started
    data = finished["data"]
    assert data["result"] == "fail"
    assert "test" not in data  # only test.triggered gets start/end times
    assert (
        f"polling for job job-executor-service-job-{event['id'][:24]}-000-001 timing out "
        in (data["message"])
    )
    assert "after 3s: max poll count reached for job" in data["message"]
    assert elapsed < 30
