"""The node agent runs pods for real: Jobs of the function runtimes and plain images end
Complete or Failed by their real exit code, with their env, mounted files and logs.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from klt_common.clients import cluster as k8s

DENO_IMAGE = "ghcr.io/klt-dev/deno-runtime:v1"
PYTHON_IMAGE = "ghcr.io/klt-dev/python-runtime:v1"


def _runtime_job(
    name: str, image: str, code: str, filename: str, **extra_env: Any
) -> dict[str, Any]:
    env = [{"name": "SCRIPT", "value": f"/var/data/{filename}"}]
    env += [
        {"name": k, "value": v} if isinstance(v, str) else {"name": k, "valueFrom": v}
        for k, v in extra_env.items()
    ]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "keptn-function-runner",
                            "image": image,
                            "env": env,
                            "volumeMounts": [
                                {
                                    "name": "function-mount",
                                    "mountPath": f"/var/data/{filename}",
                                    "subPath": "code",
                                    "readOnly": True,
                                }
                            ],
                        }
                    ],
                    "volumes": [{"name": "function-mount", "configMap": {"name": f"{name}-code"}}],
                }
            },
        },
    }


async def _wait_job(cluster: k8s.ClusterClient, namespace: str, name: str) -> str:
    """Wait until the Job has a terminal condition; returns Complete or Failed."""
    for _ in range(300):
        job = await cluster.get(k8s.JOBS, name, namespace)
        for condition in job.get("status", {}).get("conditions") or []:
            if condition["type"] in ("Complete", "Failed") and condition["status"] == "True":
                return str(condition["type"])
        await asyncio.sleep(0.2)
    raise AssertionError(f"job {name} did not finish: {job.get('status')}")


async def _pod_of(cluster: k8s.ClusterClient, namespace: str, job: str) -> dict[str, Any]:
    pods = await cluster.list(k8s.PODS, namespace, label_selector=f"job-name={job}")
    assert pods.items, f"no pod for job {job}"
    return pods.items[0]


async def _logs(cluster: k8s.ClusterClient, namespace: str, pod: str) -> str:
    response = await cluster._send("GET", k8s.PODS.path(namespace, pod, "log"))
    async with response:
        assert response.status == 200, await response.text()
        return await response.text()


async def _code(cluster: k8s.ClusterClient, namespace: str, name: str, code: str) -> None:
    await cluster.create(
        k8s.CONFIGMAPS,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name},
            "data": {"code": code},
        },
        namespace,
    )


async def test_a_deno_job_that_exits_1_fails_and_one_that_exits_0_completes(
    cluster: k8s.ClusterClient, namespace: str
) -> None:
    await _code(
        cluster, namespace, "ok-code", 'console.log("hello from deno", Deno.env.get("DATA"));\n'
    )
    await _code(
        cluster, namespace, "bad-code", 'console.error("failing on purpose");\nDeno.exit(1);\n'
    )
    ok = _runtime_job("ok", DENO_IMAGE, "", "function.ts", DATA='{"k":"v"}')
    bad = _runtime_job("bad", DENO_IMAGE, "", "function.ts")
    await cluster.create(k8s.JOBS, ok, namespace)
    await cluster.create(k8s.JOBS, bad, namespace)
    assert await _wait_job(cluster, namespace, "ok") == "Complete"
    assert await _wait_job(cluster, namespace, "bad") == "Failed"
    ok_pod = await _pod_of(cluster, namespace, "ok")
    bad_pod = await _pod_of(cluster, namespace, "bad")
    ok_state = ok_pod["status"]["containerStatuses"][0]["state"]["terminated"]
    bad_state = bad_pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert ok_state["exitCode"] == 0
    assert bad_state["exitCode"] == 1
    assert 'hello from deno {"k":"v"}' in await _logs(
        cluster, namespace, ok_pod["metadata"]["name"]
    )
    assert "failing on purpose" in await _logs(cluster, namespace, bad_pod["metadata"]["name"])


async def test_a_python_runtime_job_gets_its_secret_and_arguments(
    cluster: k8s.ClusterClient, namespace: str
) -> None:
    await cluster.create(
        k8s.SECRETS,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "creds"},
            "data": {"SECURE_DATA": base64.b64encode(b"s3cr3t").decode()},
        },
        namespace,
    )
    await _code(
        cluster,
        namespace,
        "py-code",
        "import os, sys\n"
        "print('secret-length', len(os.environ['SECURE_DATA']), 'flags', sys.flags.optimize)\n",
    )
    job = _runtime_job(
        "py",
        PYTHON_IMAGE,
        "",
        "function.py",
        CMD_ARGS="-O",
        SECURE_DATA={"secretKeyRef": {"name": "creds", "key": "SECURE_DATA"}},
    )
    await cluster.create(k8s.JOBS, job, namespace)
    assert await _wait_job(cluster, namespace, "py") == "Complete"
    pod = await _pod_of(cluster, namespace, "py")
    assert "secret-length 6 flags 1" in await _logs(cluster, namespace, pod["metadata"]["name"])


async def test_a_busybox_container_runs_its_command_with_retries_counted(
    cluster: k8s.ClusterClient, namespace: str
) -> None:
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "shell"},
        "spec": {
            "backoffLimit": 1,
            "template": {
                "spec": {
                    "restartPolicy": "OnFailure",
                    "containers": [
                        {
                            "name": "main",
                            "image": "busybox:1.36",
                            "command": ["sh", "-c", "echo trying; exit 3"],
                        }
                    ],
                }
            },
        },
    }
    await cluster.create(k8s.JOBS, job, namespace)
    assert await _wait_job(cluster, namespace, "shell") == "Failed"
    done = await cluster.get(k8s.JOBS, "shell", namespace)
    reasons = {c["reason"] for c in done["status"]["conditions"] if c["type"] == "Failed"}
    assert reasons == {"BackoffLimitExceeded"}


async def test_other_pods_run_and_unschedulable_ones_stay_pending(
    cluster: k8s.ClusterClient, namespace: str
) -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]},
            },
        },
    }
    await cluster.create(k8s.DEPLOYMENTS, deployment, namespace)
    stuck = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "nowhere"},
        "spec": {
            "nodeSelector": {"no-such": "node"},
            "containers": [{"name": "c", "image": "nginx:1.27"}],
        },
    }
    await cluster.create(k8s.PODS, stuck, namespace)
    for _ in range(150):
        dep = await cluster.get(k8s.DEPLOYMENTS, "web", namespace)
        if dep.get("status", {}).get("availableReplicas") == 2:
            break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError(f"deployment never became available: {dep.get('status')}")
    pod = await cluster.get(k8s.PODS, "nowhere", namespace)
    assert pod.get("status", {}).get("phase") == "Pending"
    assert not pod["spec"].get("nodeName")


async def test_deleting_a_pod_stops_its_running_container_and_the_pod_goes(
    cluster: k8s.ClusterClient, namespace: str
) -> None:
    marker = f"klt-node-agent-test-{namespace}"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "sleeper"},
        "spec": {
            "terminationGracePeriodSeconds": 30,
            "containers": [
                {
                    "name": "main",
                    "image": "busybox:1.36",
                    # The marker names the process, so the test can tell it is gone.
                    "command": ["sh", "-c", f"exec sleep 3600 # {marker}"],
                }
            ],
        },
    }
    await cluster.create(k8s.PODS, pod, namespace)
    for _ in range(300):
        current = await cluster.get(k8s.PODS, "sleeper", namespace)
        if current.get("status", {}).get("phase") == "Running":
            break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError(f"the pod never ran: {current.get('status')}")

    await cluster.delete(k8s.PODS, "sleeper", namespace)
    # Like the kubelet: the container is stopped and the pod removed, well before the hour its
    # command would take (a pod left Terminating would hold its namespace for that hour).
    for _ in range(300):
        if await cluster.get_or_none(k8s.PODS, "sleeper", namespace) is None:
            break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError("the deleted pod is still there")
    running = await asyncio.create_subprocess_exec(
        "pgrep", "-f", marker, stdout=asyncio.subprocess.DEVNULL
    )
    assert await running.wait() == 1, "the container's process was left running"
