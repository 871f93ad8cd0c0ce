"""Helpers for the fault-injection suite (tests/integration/faults, marker ``faults``).

The tests here break things on purpose, so they never break the stack's own parts: every
service they kill is a process of the suite's own (``python -m klt_<service>``, as ``klt dev
up`` starts them), confined to its topic prefix and shard labels, and the broker they restart
is a private one on ports of its own. Only the apiserver (and, for reading, the
stack's Prometheus) is shared, and the tests never stop it.

``KLT_LONG=1`` selects the long variants (100 concurrent lifecycles, 10 000 fuzz cases per
target); without it each test runs a short version that still exercises the real behaviour.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from klt_cli.devstack import health
from klt_cli.devstack import stack as devstack
from klt_cli.devstack.proc import is_alive
from klt_common.clients import cluster as k8s
from klt_common.structs import discovery as d

T = TypeVar("T")

LONG = os.environ.get("KLT_LONG", "") not in ("", "0")
"""The long variants: KLT_LONG=1."""

LIFECYCLE = "lifecycle.keptn.sh/v1"
METRICS = "metrics.keptn.sh/v1"
KAV = k8s.keptn_resource("KeptnAppVersion")
KWV = k8s.keptn_resource("KeptnWorkloadVersion")
KW = k8s.keptn_resource("KeptnWorkload")
KAPP = k8s.keptn_resource("KeptnApp")
TASKS = k8s.keptn_resource("KeptnTask")
EVALUATIONS = k8s.keptn_resource("KeptnEvaluation")
TASK_DEFINITIONS = k8s.keptn_resource("KeptnTaskDefinition")
EVALUATION_DEFINITIONS = k8s.keptn_resource("KeptnEvaluationDefinition")
PROVIDERS = k8s.keptn_resource("KeptnMetricsProvider")
KEPTN_METRICS = k8s.keptn_resource("KeptnMetric")

SCHEDULER_SHARD = "klt.sh/scheduler-shard"
AGGREGATOR_SHARD = "klt.sh/aggregator-shard"
EVALUATOR_SHARD = "evaluator.klt.sh/shard"
RUNNER_CLASS = "klt.dev/runner-class"
TASK_UID = "klt.dev/task-uid"

PROMETHEUS_URL = "http://127.0.0.1:19090"
"""The stack's Prometheus: evaluations here ask it ``vector(1)``, which needs no scrape."""

REPO_ROOT = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def eventually(
    probe: Callable[[], Awaitable[T | None]],
    *,
    timeout: float,
    what: str,
    interval: float = 0.25,
) -> T:
    """Poll ``probe`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = await probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} ({last!r})")
        await asyncio.sleep(interval)


# --------------------------------------------------------------------------------------------
# The services, as processes of the test's own


SERVICE_MODULES = {
    "app-aggregator": "klt_app_aggregator",
    "scheduler": "klt_scheduler",
    "task-runner": "klt_task_runner",
    "evaluator": "klt_evaluator",
}


@dataclass(frozen=True)
class Scope:
    """What keeps a test's services and objects apart from the stack's and other tests'."""

    namespace: str
    """The test's namespace; empty for the scope of a fleet that serves several tests."""
    shard: str
    topic_prefix: str
    bootstrap: str
    kubeconfig: str

    def namespace_labels(self) -> dict[str, str]:
        return {SCHEDULER_SHARD: self.shard, AGGREGATOR_SHARD: self.shard}

    def object_labels(self) -> dict[str, str]:
        """Labels for task and evaluation definitions and metrics: KeptnTasks and
        KeptnEvaluations inherit them, so only this test's task-runner and evaluator act."""
        return {RUNNER_CLASS: self.shard, EVALUATOR_SHARD: self.shard}


def service_env(service: str, scope: Scope, port: int, **extra: str) -> dict[str, str]:
    """The environment of one service process: the stack's variables (as ``klt dev up`` sets
    them) narrowed to the test's scope, with short retries and a short session timeout so that
    a killed member's partitions move on quickly."""
    env = {
        "KLT_CLUSTER__KUBECONFIG": scope.kubeconfig,
        "KLT_CLUSTER__RETRY_DELAYS": "[0.1, 0.3, 1.0, 2.0]",
        "KLT_BUS__BOOTSTRAP_SERVERS": scope.bootstrap,
        "KLT_BUS__TOPIC_PREFIX": scope.topic_prefix,
        "KLT_BUS__PARTITIONS": "3",
        "KLT_BUS__SESSION_TIMEOUT_MS": "6000",
        "KLT_BUS__HEARTBEAT_INTERVAL_MS": "500",
        "KLT_BUS__HANDLER_RETRY_DELAYS": "[0.2, 1.0, 2.0]",
        "KLT_BUS__DRAIN_GRACE_SECONDS": "3",
        "KLT_SHUTDOWN__GRACE_SECONDS": "8",
        "KLT_INSTANCE_ID": f"{service}-{scope.shard}",
        "KLT_OBSERVABILITY__HTTP_HOST": "127.0.0.1",
        "KLT_OBSERVABILITY__HTTP_PORT": str(port),
        "KLT_OBSERVABILITY__LOG_JSON": "false",
    }
    if service == "app-aggregator":
        env |= {
            "KLT_AGGREGATION__SHARD": scope.shard,
            "KLT_AGGREGATION__GATED_POD_GRACE_SECONDS": "0",
            "KLT_AGGREGATION__RESYNC_SECONDS": "5",
            "KLT_AGGREGATION__RETRY_DELAYS": "[0.3, 1.0, 2.0]",
        }
    elif service == "scheduler":
        env |= {
            "KLT_SCHEDULER__SHARD": scope.shard,
            "KLT_SCHEDULER__CONSUMER_GROUP": f"klt-scheduler-{scope.shard}",
            "KLT_SCHEDULER__RESYNC_SECONDS": "5",
            "KLT_SCHEDULER__RETRY_DELAYS": "[0.2, 0.5, 1.0]",
        }
    elif service == "task-runner":
        env |= {
            "KLT_TASKS__RUNNER_CLASS": scope.shard,
            "KLT_TASKS__CONSUMER_GROUP": f"klt-task-runner-{scope.shard}",
            "KLT_TASKS__ERROR_RETRY_DELAYS": "[0.2, 0.5, 1.0, 2.0]",
        }
    elif service == "evaluator":
        env |= {
            "KLT_EVALUATOR__SHARD": scope.shard,
            "KLT_EVALUATOR__CONSUMER_GROUP": f"klt-evaluator-{scope.shard}",
            "KLT_EVALUATOR__STATUS_RETRY_SECONDS": "1",
        }
    # A scope with one namespace narrows the watches to it; a fleet serving several tests'
    # namespaces (each labelled with its shard) watches the cluster.
    if scope.namespace and service == "app-aggregator":
        env["KLT_AGGREGATION__NAMESPACE"] = scope.namespace
    if scope.namespace and service == "scheduler":
        env["KLT_SCHEDULER__NAMESPACE"] = scope.namespace
    env.update(extra)
    return env


@dataclass
class ServiceProcess:
    """One klt service run as ``python -m klt_<service>``, killed and restarted at will."""

    service: str
    scope: Scope
    log_dir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    # A plain Popen rather than an asyncio subprocess: the suite stops its processes from a
    # synchronous hook too, when no event loop runs.
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    kills: int = 0
    _terminating: bool = False

    @property
    def log(self) -> Path:
        return self.log_dir / f"{self.service}.log"

    def env(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("KLT_")}
        base["KLT_REPO_ROOT"] = str(REPO_ROOT)
        return base | service_env(self.service, self.scope, self.port, **self.extra_env)

    async def start(self, *, timeout: float = 120.0) -> None:
        """Start the process and wait until its /readyz answers 200 (caches synced)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._terminating = False
        with self.log.open("ab") as sink:
            sink.write(f"\n=== start {self.starts + 1} at {time.time():.3f}\n".encode())
            sink.flush()
            self.process = subprocess.Popen(
                [sys.executable, "-m", SERVICE_MODULES[self.service]],
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1
        await self.wait_ready(timeout=timeout)

    async def wait_ready(self, *, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.port}/readyz"
        async with aiohttp.ClientSession() as http:
            while True:
                if not self.running:
                    raise AssertionError(
                        f"{self.service} exited during start-up; log {self.log}:\n{self.tail()}"
                    )
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(url, timeout=aiohttp.ClientTimeout(total=5)) as response:
                        if response.status == 200:
                            return
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"{self.service} not ready after {timeout:.0f}s; log {self.log}:\n"
                        f"{self.tail()}"
                    )
                await asyncio.sleep(0.2)

    async def kill(self) -> None:
        """SIGKILL: no drain, no commit, no goodbye to the consumer group."""
        process = self.process
        assert process is not None, f"{self.service} was never started"
        assert process.poll() is None, f"{self.service} is not running"
        process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(process.wait)
        self.kills += 1
        with self.log.open("ab") as sink:
            sink.write(f"\n=== SIGKILL at {time.time():.3f}\n".encode())

    def terminate(self) -> None:
        """Send SIGTERM once (a second one would cut the staged shutdown short)."""
        process = self.process
        if process is not None and process.poll() is None and not self._terminating:
            self._terminating = True
            process.send_signal(signal.SIGTERM)

    def stop(self) -> int | None:
        """SIGTERM and wait for the staged shutdown (SIGKILL if it hangs); the exit code, or
        None if it never ran. Stopping a stopped process returns its exit code again."""
        process = self.process
        if process is None:
            return None
        if process.poll() is not None:
            return process.returncode
        self.terminate()
        try:
            return process.wait(45)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    async def metrics(self) -> dict[str, float]:
        """The service's own /metrics, summed per sample name (labels dropped)."""
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{self.port}/metrics") as response,
        ):
            text = await response.text()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            name, _, value = line.rpartition(" ")
            name = name.split("{", 1)[0]
            with contextlib.suppress(ValueError):
                out[name] = out.get(name, 0.0) + float(value)
        return out

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError as exc:
            return f"(no log: {exc})"


# --------------------------------------------------------------------------------------------
# The private broker


@dataclass
class PrivateKafka:
    """A single-node KRaft broker on ports of its own (``klt dev``'s Kafka component)."""

    stack: devstack.Stack
    port: int
    restarts: int = 0

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _component(self) -> devstack.Component:
        return next(c for c in self.stack.components(services=False) if c.name == "kafka")

    def pid(self) -> int | None:
        comp = self._component()
        return self.stack._pid(comp)

    def start(self) -> None:
        self.stack.start_component(self._component(), timeout=180)

    def kill(self) -> None:
        """SIGKILL the broker (its whole process group) and wait until it is gone."""
        pid = self.pid()
        assert pid is not None, "the private broker is not running"
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while is_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not is_alive(pid), "the private broker survived SIGKILL"
        while health.port_in_use("127.0.0.1", self.port) and time.monotonic() < deadline:
            time.sleep(0.1)

    def restart(self) -> None:
        self.kill()
        self.start()
        self.restarts += 1

    def stop(self) -> None:
        # Its data is thrown away: no controlled shutdown to wait for.
        if self.pid() is not None:
            self.kill()


# --------------------------------------------------------------------------------------------
# Namespaces and lifecycles


async def free_pod_slots(cluster: k8s.ClusterClient) -> tuple[int, int]:
    """(free, capacity): pods the Ready, schedulable nodes can still take, and in all."""
    nodes = (await cluster.list(k8s.NODES)).items
    capacity = 0
    for node in nodes:
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (node.get("status") or {}).get("conditions") or []
        )
        if ready and not (node.get("spec") or {}).get("unschedulable"):
            capacity += int(((node.get("status") or {}).get("capacity") or {}).get("pods", 0))
    active = (
        await cluster.list(
            k8s.PODS, field_selector="spec.nodeName!=,status.phase!=Succeeded,status.phase!=Failed"
        )
    ).items
    return capacity - len(active), capacity


async def require_pod_slots(cluster: k8s.ClusterClient, needed: int, *, wait: float = 120) -> int:
    """Wait (up to ``wait`` seconds) until the stack's nodes can take ``needed`` more pods, and
    fail, saying why, if they cannot.

    The node agent's nodes are shared with every other test and benchmark on the machine. A run
    that cannot place its Jobs would only end in task deadlines, which would read like a klt
    failure.
    """
    deadline = time.monotonic() + wait
    while True:
        free, capacity = await free_pod_slots(cluster)
        if free >= needed:
            return free
        if time.monotonic() > deadline:
            raise AssertionError(
                f"the stack's nodes have {free} free pod slots ({capacity} in all, the rest "
                f"held by running pods of every namespace); this test needs {needed}. Another "
                "run holds them: retry when it has finished."
            )
        await asyncio.sleep(2)


@dataclass(frozen=True)
class Plan:
    """One lifecycle: a single-service app whose pre-deployment task passes or fails."""

    app: str
    fails: bool = False
    evaluation: bool = False

    @property
    def workload_version(self) -> str:
        return d.create_resource_name(self.app, self.app, "1.0")

    @property
    def expected(self) -> str:
        return "Failed" if self.fails else "Succeeded"


async def create_checks(cluster: k8s.ClusterClient, scope: Scope) -> None:
    """The task definitions (one passes, one fails at once without retries) and an evaluation
    answered by the stack's Prometheus, all labelled for the test's own services."""
    labels = scope.object_labels()
    ns = scope.namespace
    for name, script, retries in (("pre-ok", "echo checked", 2), ("pre-fail", "exit 3", 0)):
        await cluster.create(
            TASK_DEFINITIONS,
            {
                "apiVersion": LIFECYCLE,
                "kind": "KeptnTaskDefinition",
                "metadata": {"name": name, "labels": labels},
                "spec": {
                    "container": {
                        "name": "check",
                        "image": "busybox:1.36",
                        "command": ["sh", "-c", script],
                    },
                    "retries": retries,
                    "timeout": "5m",
                },
            },
            ns,
        )
    await create_evaluation(cluster, scope)


async def create_evaluation(
    cluster: k8s.ClusterClient, scope: Scope, *, provider_secret: dict[str, str] | None = None
) -> None:
    """The evaluation ``healthy``: metric ``one`` (``vector(1)``) from the stack's Prometheus,
    through provider ``prom`` (with ``provider_secret`` as its ``secretKeyRef`` when given)."""
    labels = scope.object_labels()
    ns = scope.namespace
    provider: dict[str, Any] = {"type": "prometheus", "targetServer": PROMETHEUS_URL}
    if provider_secret is not None:
        provider["secretKeyRef"] = provider_secret
    await cluster.create(
        PROVIDERS,
        {
            "apiVersion": METRICS,
            "kind": "KeptnMetricsProvider",
            "metadata": {"name": "prom"},
            "spec": provider,
        },
        ns,
    )
    await cluster.create(
        KEPTN_METRICS,
        {
            "apiVersion": METRICS,
            "kind": "KeptnMetric",
            "metadata": {"name": "one", "labels": labels},
            "spec": {"provider": {"name": "prom"}, "query": "vector(1)", "fetchIntervalSeconds": 5},
        },
        ns,
    )
    await cluster.create(
        EVALUATION_DEFINITIONS,
        {
            "apiVersion": LIFECYCLE,
            "kind": "KeptnEvaluationDefinition",
            "metadata": {"name": "healthy", "labels": labels},
            "spec": {
                "objectives": [{"keptnMetricRef": {"name": "one"}, "evaluationTarget": ">0"}],
                "retries": 10,
                "retryInterval": "1s",
            },
        },
        ns,
    )


def gated_replicaset(plan: Plan) -> dict[str, Any]:
    """A ReplicaSet whose pod is created gated and annotated, as the webhook admits it."""
    annotations = {
        d.APP: plan.app,
        d.WORKLOAD: plan.app,
        d.VERSION: "1.0",
        d.PRE_TASKS: "pre-fail" if plan.fails else "pre-ok",
    }
    if plan.evaluation:
        annotations[d.POST_EVALUATIONS] = "healthy"
    labels = {"component": plan.app}
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": plan.app},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": {
                    "schedulingGates": [{"name": d.SCHEDULING_GATE}],
                    "terminationGracePeriodSeconds": 0,
                    "containers": [{"name": "web", "image": "nginx:1.27"}],
                },
            },
        },
    }


def plans(count: int, *, prefix: str = "app") -> list[Plan]:
    """``count`` lifecycles: every fifth fails its pre-deployment task, every third has a
    post-deployment evaluation."""
    return [Plan(f"{prefix}-{i}", fails=i % 5 == 4, evaluation=i % 3 == 1) for i in range(count)]


def outcome(obj: Mapping[str, Any] | None) -> str | None:
    """``Succeeded``/``Failed`` once an app or workload version has finished, else None."""
    if obj is None:
        return None
    status = obj.get("status") or {}
    if status.get("status") == "Failed" or (
        status.get("status") == "Succeeded" and status.get("currentPhase") == "Completed"
    ):
        return str(status["status"])
    return None


async def outcomes(cluster: k8s.ClusterClient, ns: str) -> dict[str, str | None]:
    """App name → its lifecycle's outcome: the app version's and the workload version's, as
    ``Succeeded`` or ``Failed`` when both have finished and agree, else None (unfinished, or
    ``app/workload`` when they disagree)."""
    workloads = {
        item["spec"].get("app", ""): outcome(item) for item in (await cluster.list(KWV, ns)).items
    }
    apps = {
        item["spec"].get("appName", ""): outcome(item)
        for item in (await cluster.list(KAV, ns)).items
    }
    out: dict[str, str | None] = {}
    for app in set(workloads) | set(apps):
        workload, version = workloads.get(app), apps.get(app)
        if workload is None or version is None:
            out[app] = None
        else:
            out[app] = workload if workload == version else f"{version}/{workload}"
    return out


async def in_flight(cluster: k8s.ClusterClient, ns: str, created: list[Plan]) -> int:
    """How many of the lifecycles created so far have not finished (discovered or not yet)."""
    found = await outcomes(cluster, ns)
    return sum(1 for plan in created if not found.get(plan.app))


async def wait_outcomes(
    cluster: k8s.ClusterClient, ns: str, lifecycle_plans: list[Plan], *, timeout: float
) -> dict[str, str | None]:
    """Wait until every planned lifecycle has finished; returns every outcome."""
    wanted = {p.app for p in lifecycle_plans}

    async def probe() -> dict[str, str | None] | None:
        found = await outcomes(cluster, ns)
        return found if all(found.get(name) for name in wanted) else None

    try:
        return await eventually(
            probe, timeout=timeout, what="every lifecycle to finish", interval=1
        )
    except AssertionError:
        found = await outcomes(cluster, ns)
        pending = sorted(name for name in wanted if not found.get(name))
        details = []
        for plan in [p for p in lifecycle_plans if p.app in pending][:4]:
            kwv = await cluster.get_or_none(KWV, plan.workload_version, ns)
            kavs = [
                i.get("status")
                for i in (await cluster.list(KAV, ns)).items
                if i["spec"].get("appName") == plan.app
            ]
            details.append(f"{plan.app}: workload {(kwv or {}).get('status')}, app {kavs}")
        raise AssertionError(
            f"{len(pending)} of {len(wanted)} lifecycles unfinished after {timeout:.0f}s: "
            + "; ".join(details)
        ) from None


async def invariants(
    cluster: k8s.ClusterClient, ns: str, lifecycle_plans: list[Plan]
) -> dict[str, int]:
    """Check what no fault may break, and return counts for the report:

    - each lifecycle ends as planned (workload version and app version);
    - no KeptnTask has two Jobs, and no check was created twice (one KeptnTask per workload
      version, definition and phase; one KeptnEvaluation likewise);
    - one KeptnWorkload, KeptnWorkloadVersion and KeptnAppVersion per app;
    - every succeeded workload's pod has lost its gate; every failed one's pod kept it.
    """
    found = await outcomes(cluster, ns)
    for plan in lifecycle_plans:
        assert found.get(plan.app) == plan.expected, (plan, found.get(plan.app))
    tasks = (await cluster.list(TASKS, ns)).items
    jobs = (await cluster.list(k8s.JOBS, ns)).items
    jobs_per_task: dict[str, int] = {}
    for job in jobs:
        uid = (job["metadata"].get("labels") or {}).get(TASK_UID, "")
        jobs_per_task[uid] = jobs_per_task.get(uid, 0) + 1
    doubled = {uid: n for uid, n in jobs_per_task.items() if n > 1}
    assert not doubled, f"KeptnTasks with more than one Job: {doubled}"
    checks: dict[tuple[str, str, str], int] = {}
    evaluations = (await cluster.list(EVALUATIONS, ns)).items
    for item in [*tasks, *evaluations]:
        spec = item["spec"]
        owners = ",".join(o.get("name", "") for o in item["metadata"].get("ownerReferences") or [])
        definition = spec.get("taskDefinition") or spec.get("evaluationDefinition") or ""
        key = (owners, definition, spec.get("checkType", ""))
        checks[key] = checks.get(key, 0) + 1
    duplicated = {k: n for k, n in checks.items() if n > 1}
    assert not duplicated, f"checks created more than once: {duplicated}"
    # Every task that ran has exactly one Job; the failing definition runs once (no retries).
    for task in tasks:
        uid = task["metadata"]["uid"]
        assert jobs_per_task.get(uid, 0) == 1, (task["metadata"]["name"], jobs_per_task.get(uid))
    kwvs = (await cluster.list(KWV, ns)).items
    assert len(kwvs) == len(lifecycle_plans), sorted(k["metadata"]["name"] for k in kwvs)
    kavs = (await cluster.list(KAV, ns)).items
    apps: dict[str, list[dict[str, Any]]] = {}
    for kav in kavs:
        apps.setdefault(kav["spec"]["appName"], []).append(kav)
    assert sorted(apps) == sorted(p.app for p in lifecycle_plans), sorted(apps)
    by_app = {p.app: p for p in lifecycle_plans}
    for app, versions in apps.items():
        assert len(versions) == 1, (app, [v["metadata"]["name"] for v in versions])
        assert outcome(versions[0]) == by_app[app].expected, (app, versions[0].get("status"))
    pods = (await cluster.list(k8s.PODS, ns)).items
    gated = {
        p["metadata"]["labels"].get("component")
        for p in pods
        if any(g.get("name") == d.SCHEDULING_GATE for g in p["spec"].get("schedulingGates") or [])
    }
    for plan in lifecycle_plans:
        assert (plan.app in gated) == plan.fails, (plan, sorted(x for x in gated if x))
    return {
        "lifecycles": len(lifecycle_plans),
        "tasks": len(tasks),
        "jobs": len(jobs),
        "evaluations": len(evaluations),
    }
