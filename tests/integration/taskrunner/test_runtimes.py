"""Every runtime and every source of code, run for real by the stack's node agent.

What the task's process saw (DATA, SECURE_DATA, KEPTN_CONTEXT, CMD_ARGS) is asserted from its
own output, which the task-runner keeps in ``status.logTail``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from taskrunner_kit import (
    create_configmap,
    create_definition,
    create_secret,
    create_task,
    jobs_of,
    make_settings,
    new_class,
    request,
    task_runner,
    wait_status,
    watch_finished,
)

from klt_common.clients import cluster as k8s
from klt_common.configs.settings import BusSettings, ClusterSettings

CONTEXT = {
    "appName": "shop",
    "appVersion": "",
    "workloadName": "shop-cart",
    "workloadVersion": "2.1.0",
    "taskType": "pre",
    "objectType": "Workload",
    "metadata": {"stage": "dev", "commit-id": "abc123"},
}
KEPTN_ORDER = (
    '{"workloadName":"shop-cart","appName":"shop","appVersion":"","workloadVersion":"2.1.0",'
    '"taskType":"pre","objectType":"Workload","metadata":{"commit-id":"abc123","stage":"dev"}}'
)

DENO_ECHO = """
console.log("DATA=" + (Deno.env.get("DATA") ?? ""));
console.log("SECURE=" + (Deno.env.get("SECURE_DATA") ?? "").length);
console.log("CONTEXT=" + Deno.env.get("KEPTN_CONTEXT"));
console.log("ARGS=" + JSON.stringify(Deno.args));
"""

PYTHON_ECHO = """
import os, sys
print("DATA=" + os.environ.get("DATA", ""))
print("SECURE=" + str(len(os.environ.get("SECURE_DATA", ""))))
print("CONTEXT=" + os.environ["KEPTN_CONTEXT"])
print("OPTIMIZE=" + str(sys.flags.optimize))
"""


def _line(log: str, key: str) -> str:
    for line in log.splitlines():
        if line.startswith(key + "="):
            return line[len(key) + 1 :]
    raise AssertionError(f"no {key}= line in {log!r}")


@pytest.fixture
async def code_server() -> AsyncIterator[str]:
    """Serves task code on 127.0.0.1, as an httpRef target."""

    async def deno(_: web.Request) -> web.Response:
        return web.Response(text=DENO_ECHO, content_type="application/typescript")

    async def python(_: web.Request) -> web.Response:
        return web.Response(text=PYTHON_ECHO, content_type="text/x-python")

    app = web.Application()
    app.router.add_get("/echo.ts", deno)
    app.router.add_get("/echo.py", python)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_a_container_task_runs_its_command_and_sees_its_context(
    cluster: k8s.ClusterClient,
    namespace: str,
    bus_settings: BusSettings,
    cluster_settings: ClusterSettings,
) -> None:
    runner_class = new_class()
    await create_definition(
        cluster,
        namespace,
        "echo-context",
        {
            "container": {
                "name": "echo",
                "image": "busybox:1.36",
                "command": ["sh", "-c", 'echo "CONTEXT=$KEPTN_CONTEXT"; echo "STAGE=$STAGE"'],
                "env": [{"name": "STAGE", "value": "dev"}],
            }
        },
    )
    async with (
        watch_finished(bus_settings) as finished,
        task_runner(make_settings(bus_settings, cluster_settings, runner_class)),
    ):
        task = await create_task(
            cluster, namespace, "pre-echo-1", "echo-context", runner_class, context=CONTEXT
        )
        await request(bus_settings, namespace, "pre-echo-1", app="shop")
        status = await wait_status(cluster, namespace, "pre-echo-1")
        event = await finished.wait_for("pre-echo-1")
    assert status["status"] == "Succeeded", status
    assert event.state == "Succeeded"
    assert event.app == "shop"
    assert event.workload == "shop-cart"
    assert _line(status["logTail"], "CONTEXT") == KEPTN_ORDER
    assert _line(status["logTail"], "STAGE") == "dev"
    [job] = await jobs_of(cluster, namespace, task)
    assert status["jobName"] == job["metadata"]["name"]
    assert status["startTime"] <= status["endTime"]


@pytest.mark.parametrize("runtime", ["deno", "python"])
async def test_inline_code_gets_data_secure_data_context_and_arguments(
    runtime: str,
    cluster: k8s.ClusterClient,
    namespace: str,
    bus_settings: BusSettings,
    cluster_settings: ClusterSettings,
) -> None:
    runner_class = new_class()
    await create_secret(cluster, namespace, "token", "s3cr3t-value")
    await create_definition(
        cluster,
        namespace,
        "echo",
        {
            runtime: {
                "inline": {"code": DENO_ECHO if runtime == "deno" else PYTHON_ECHO},
                "parameters": {"map": {"user": "definition", "channel": "#ops"}},
                "secureParameters": {"secret": "token"},
                "cmdParameters": "-O" if runtime == "python" else "one two",
            }
        },
    )
    async with task_runner(make_settings(bus_settings, cluster_settings, runner_class)):
        await create_task(
            cluster,
            namespace,
            "pre-echo",
            "echo",
            runner_class,
            context=CONTEXT,
            parameters={"map": {"user": "task"}},
        )
        status = await wait_status(cluster, namespace, "pre-echo")
    assert status["status"] == "Succeeded", status
    log = status["logTail"]
    assert json.loads(_line(log, "DATA")) == {"channel": "#ops", "user": "task"}
    assert _line(log, "SECURE") == str(len("s3cr3t-value"))
    assert _line(log, "CONTEXT") == KEPTN_ORDER
    if runtime == "python":
        assert _line(log, "OPTIMIZE") == "1"
    else:
        assert json.loads(_line(log, "ARGS")) == ["one", "two"]
    definition = await cluster.get(k8s.keptn_resource("KeptnTaskDefinition"), "echo", namespace)
    assert definition["status"]["function"]["configMap"] == "keptnfn-echo"
    config_map = await cluster.get(k8s.CONFIGMAPS, "keptnfn-echo", namespace)
    assert config_map["metadata"]["ownerReferences"][0]["name"] == "echo"
    assert "s3cr3t-value" not in json.dumps(status)


@pytest.mark.parametrize("runtime", ["deno", "python"])
async def test_http_ref_code_is_fetched_from_the_url(
    runtime: str,
    code_server: str,
    cluster: k8s.ClusterClient,
    namespace: str,
    bus_settings: BusSettings,
    cluster_settings: ClusterSettings,
) -> None:
    runner_class = new_class()
    url = f"{code_server}/echo.{'ts' if runtime == 'deno' else 'py'}"
    await create_definition(
        cluster,
        namespace,
        "fetched",
        {runtime: {"httpRef": {"url": url}, "parameters": {"map": {"k": "v"}}}},
    )
    async with task_runner(make_settings(bus_settings, cluster_settings, runner_class)):
        await create_task(cluster, namespace, "post-fetched", "fetched", runner_class)
        status = await wait_status(cluster, namespace, "post-fetched")
    assert status["status"] == "Succeeded", status
    assert json.loads(_line(status["logTail"], "DATA")) == {"k": "v"}
    assert _line(status["logTail"], "SECURE") == "0"


async def test_config_map_ref_code_runs_from_the_named_config_map(
    cluster: k8s.ClusterClient,
    namespace: str,
    bus_settings: BusSettings,
    cluster_settings: ClusterSettings,
) -> None:
    runner_class = new_class()
    await create_configmap(cluster, namespace, "my-code", 'console.log("from the config map");\n')
    await create_definition(
        cluster, namespace, "from-cm", {"deno": {"configMapRef": {"name": "my-code"}}}
    )
    async with task_runner(make_settings(bus_settings, cluster_settings, runner_class)):
        await create_task(cluster, namespace, "pre-cm", "from-cm", runner_class)
        status = await wait_status(cluster, namespace, "pre-cm")
        definition = await wait_status_of_definition(cluster, namespace, "from-cm")
    assert status["status"] == "Succeeded", status
    assert "from the config map" in status["logTail"]
    assert definition["function"]["configMap"] == "my-code"


async def wait_status_of_definition(
    cluster: k8s.ClusterClient, namespace: str, name: str
) -> dict[str, object]:
    import asyncio

    resource = k8s.keptn_resource("KeptnTaskDefinition")
    for _ in range(100):
        body = await cluster.get(resource, name, namespace)
        if (body.get("status") or {}).get("function"):
            return dict(body["status"])
        await asyncio.sleep(0.1)
    raise AssertionError(f"definition {name} never got a status")


async def test_function_ref_runs_the_parents_code_with_merged_parameters(
    code_server: str,
    cluster: k8s.ClusterClient,
    namespace: str,
    bus_settings: BusSettings,
    cluster_settings: ClusterSettings,
) -> None:
    """The child definition's keys beat the parent's; the task's beat both; the parent's code
    and runtime run (a deno child may reuse a python parent, as in Keptn)."""
    runner_class = new_class()
    await create_secret(cluster, namespace, "child-secret", "child-pw")
    await create_definition(
        cluster,
        namespace,
        "parent",
        {
            "python": {
                "inline": {"code": PYTHON_ECHO},
                "parameters": {"map": {"a": "parent", "b": "parent", "c": "parent"}},
                "secureParameters": {"secret": "parent-secret-does-not-exist"},
            }
        },
    )
    await create_definition(
        cluster,
        namespace,
        "child",
        {
            "deno": {
                "functionRef": {"name": "parent"},
                "parameters": {"map": {"b": "child", "c": "child"}},
                "secureParameters": {"secret": "child-secret"},
            }
        },
    )
    async with task_runner(make_settings(bus_settings, cluster_settings, runner_class)):
        await create_task(
            cluster,
            namespace,
            "pre-child",
            "child",
            runner_class,
            parameters={"map": {"c": "task"}},
        )
        status = await wait_status(cluster, namespace, "pre-child")
    assert status["status"] == "Succeeded", status
    log = status["logTail"]
    assert json.loads(_line(log, "DATA")) == {"a": "parent", "b": "child", "c": "task"}
    assert _line(log, "SECURE") == str(len("child-pw"))
    assert _line(log, "OPTIMIZE") == "0"
