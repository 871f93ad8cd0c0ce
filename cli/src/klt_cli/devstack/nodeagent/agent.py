"""The dev stack's node agent: a small kubelet stand-in that really runs pods' processes.

It registers Ready nodes (with leases, so the node lifecycle controller keeps them Ready),
watches the pods the real kube-scheduler binds to them, and for each pod:

- runs containers of the function-runtime images and of a few plain images (busybox, alpine,
  python) as host processes, with the pod's env, ConfigMap and Secret files, and reports
  Running, then Succeeded or Failed with the real exit code (restarting under OnFailure/Always
  and counting restarts, which is what Job backoff limits are computed from);
- reports every other pod Running and Ready, so Deployments become available;
- serves ``/containerLogs`` over HTTPS on the node's kubelet port, so ``kubectl logs`` and the
  services read real logs through the apiserver;
- on deletion stops the processes and removes the pod, as a kubelet's final delete does.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import os
import signal
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from klt_cli.devstack.nodeagent import sandbox as sb
from klt_cli.devstack.nodeagent.settings import NodeAgentSettings
from klt_common.aiokits.retry import sleep_or_stop
from klt_common.clients import cluster as k8s

_log = logging.getLogger(__name__)
Body = dict[str, Any]
KUBELET_VERSION = "v1.34.1"


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _ContainerRun:
    name: str
    image: str
    state: Body = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    restarts: int = 0
    ready: bool = False
    log_path: Path | None = None

    def status(self) -> Body:
        return {
            "name": self.name,
            "image": self.image,
            "imageID": f"klt-node-agent://{self.image}",
            "containerID": f"klt://{self.name}",
            "ready": self.ready,
            "started": "running" in self.state,
            "restartCount": self.restarts,
            "state": self.state,
        }


class PodWorker:
    """Owns one pod on one node: its processes, its status, and its deletion."""

    def __init__(self, agent: NodeAgent, pod: Body, node: str) -> None:
        self.agent = agent
        self.pod = pod
        self.node = node
        self.uid: str = pod["metadata"]["uid"]
        self.namespace: str = pod["metadata"]["namespace"]
        self.name: str = pod["metadata"]["name"]
        self.deleted = asyncio.Event()
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        spec = pod.get("spec", {})
        self.containers = [
            _ContainerRun(c["name"], c.get("image", "")) for c in spec.get("containers", [])
        ]
        self.started_at = _now()
        self.log_dir = (
            Path(agent.settings.sandbox_dir) / "logs" / f"{self.namespace}_{self.name}_{self.uid}"
        )

    def log_path(self, container: str) -> Path:
        return self.log_dir / f"{container}.log"

    async def run(self) -> None:
        try:
            await self._run()
        except asyncio.CancelledError:
            await self._kill_all()
            raise
        except k8s.NotFound:
            _log.debug("pod %s/%s vanished", self.namespace, self.name)
        except Exception:  # noqa: BLE001 - the worker must outlive a failed report
            # A worker that died here would leave its processes running and its pod stuck in
            # Terminating for ever (nothing else knows the processes): keep it until deletion.
            _log.exception(
                "pod %s/%s: worker failed; waiting for deletion", self.namespace, self.name
            )
            await self.deleted.wait()
        await self._finalise_delete()

    async def _run(self) -> None:
        if self.deleted.is_set():
            return
        spec = self.pod.get("spec", {})
        if self.pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
            await self.deleted.wait()
            return
        kinds = {
            c["name"]: sb.classify(c.get("image", ""), self.agent.settings)
            for c in [*(spec.get("initContainers") or []), *spec.get("containers", [])]
        }
        if all(k == "simulated" for k in kinds.values()):
            for c in self.containers:
                c.state = {"running": {"startedAt": self.started_at}}
                c.ready = True
            await self._report("Running")
            await self.deleted.wait()
            return
        sandbox = await self._prepare()
        if sandbox is None:
            return
        for init in spec.get("initContainers") or []:
            if kinds[init["name"]] == "simulated":
                continue
            code = await self._exec(init, kinds[init["name"]], sandbox, None)
            if code != 0 or self.deleted.is_set():
                await self._report("Failed")
                await self.deleted.wait()
                return
        restart = spec.get("restartPolicy", "Always")
        results = await asyncio.gather(
            *(
                self._run_container(c, kinds[c["name"]], sandbox, run, restart)
                for c, run in zip(spec.get("containers", []), self.containers, strict=True)
            )
        )
        if self.deleted.is_set():
            return
        await self._report("Succeeded" if all(code == 0 for code in results) else "Failed")
        await self.deleted.wait()

    async def _prepare(self) -> sb.Sandbox | None:
        """Build the sandbox, retrying while a referenced ConfigMap or Secret is missing."""
        while not self.deleted.is_set():
            try:
                configmaps, secrets = await self._referenced_objects()
                base = Path(self.agent.settings.sandbox_dir) / "pods"
                sandbox = await asyncio.to_thread(
                    sb.build_sandbox, self.pod, base, configmaps, secrets
                )
                self._configmaps, self._secrets = configmaps, secrets
                for c in [
                    *(self.pod["spec"].get("initContainers") or []),
                    *self.pod["spec"]["containers"],
                ]:
                    sb.container_env(self.pod, c, configmaps, secrets)
                await asyncio.to_thread(sb.hand_over, sandbox.root, self.agent.ids)
                self.log_dir.mkdir(parents=True, exist_ok=True)
            except sb.SandboxError as exc:
                for c in self.containers:
                    c.state = {"waiting": {"reason": exc.reason, "message": exc.message}}
                await self._report("Pending")
                if await sleep_or_stop(2.0, self.deleted):
                    return None
            else:
                return sandbox
        return None

    async def _referenced_objects(self) -> tuple[dict[str, Body], dict[str, Body]]:
        spec = self.pod["spec"]
        cm_names: set[str] = set()
        secret_names: set[str] = set()
        for volume in spec.get("volumes") or []:
            if "configMap" in volume:
                cm_names.add(volume["configMap"].get("name", ""))
            if "secret" in volume:
                secret_names.add(volume["secret"].get("secretName", ""))
        for c in [*(spec.get("initContainers") or []), *spec.get("containers", [])]:
            for src in c.get("envFrom") or []:
                if "configMapRef" in src:
                    cm_names.add(src["configMapRef"]["name"])
                if "secretRef" in src:
                    secret_names.add(src["secretRef"]["name"])
            for env in c.get("env") or []:
                vf = env.get("valueFrom") or {}
                if "configMapKeyRef" in vf:
                    cm_names.add(vf["configMapKeyRef"]["name"])
                if "secretKeyRef" in vf:
                    secret_names.add(vf["secretKeyRef"]["name"])
        client = self.agent.client
        cms = {
            n: o
            for n in cm_names
            if (o := await client.get_or_none(k8s.CONFIGMAPS, n, self.namespace))
        }
        secrets = {
            n: o
            for n in secret_names
            if (o := await client.get_or_none(k8s.SECRETS, n, self.namespace))
        }
        return cms, secrets

    async def _run_container(
        self, container: Body, kind: str, sandbox: sb.Sandbox, run: _ContainerRun, restart: str
    ) -> int:
        if kind == "simulated":
            run.state = {"running": {"startedAt": _now()}}
            run.ready = True
            await self._report("Running")
            await self.deleted.wait()
            return 0
        backoff = self.agent.settings.restart_backoff
        while True:
            code = await self._exec(container, kind, sandbox, run)
            if self.deleted.is_set():
                return code
            if restart == "Never" or (restart == "OnFailure" and code == 0):
                return code
            delay = backoff[min(run.restarts, len(backoff) - 1)]
            run.restarts += 1
            await self._report("Running")
            if await sleep_or_stop(delay, self.deleted):
                return code

    async def _exec(
        self, container: Body, kind: str, sandbox: sb.Sandbox, run: _ContainerRun | None
    ) -> int:
        env = sb.container_env(self.pod, container, self._configmaps, self._secrets)
        launch = sb.launch_for(kind, container, env, sandbox, self.agent.settings)
        log_path = self.log_path(container["name"])
        ids = self.agent.ids
        started = _now()
        with log_path.open("ab") as log:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *launch.argv,
                    env=launch.env,
                    cwd=launch.cwd,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                    user=ids[0] if ids else None,
                    group=ids[1] if ids else None,
                    extra_groups=[] if ids else None,
                )
            except OSError as exc:
                log.write(f"klt node agent: cannot start {launch.argv[0]}: {exc}\n".encode())
                code = 128
                if run is not None:
                    run.state = {
                        "terminated": {
                            "exitCode": code,
                            "reason": "StartError",
                            "message": str(exc),
                            "startedAt": started,
                            "finishedAt": _now(),
                        }
                    }
                return code
            self.procs[container["name"]] = proc
            if run is not None:
                run.state = {"running": {"startedAt": started}}
                run.ready = True
                run.log_path = log_path
                await self._report("Running")
            code = await proc.wait()
            self.procs.pop(container["name"], None)
        if code < 0:
            code = 128 - code  # killed by a signal: the shell convention the kubelet reports too
        if run is not None:
            run.ready = False
            run.state = {
                "terminated": {
                    "exitCode": code,
                    "reason": "Completed" if code == 0 else "Error",
                    "startedAt": started,
                    "finishedAt": _now(),
                }
            }
        return code

    async def _report(self, phase: str) -> None:
        ready = phase == "Running" and all(c.ready for c in self.containers)
        conditions = [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Initialized", "status": "True"},
            {"type": "ContainersReady", "status": "True" if ready else "False"},
            {"type": "Ready", "status": "True" if ready else "False"},
        ]
        for condition in conditions:
            condition["lastTransitionTime"] = _now()
        status = {
            "phase": phase,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": self.started_at,
            "conditions": conditions,
            "containerStatuses": [c.status() for c in self.containers],
        }
        # A status the apiserver did not take is retried until it is (or the pod goes away):
        # losing a final Succeeded/Failed would leave its Job running forever.
        while True:
            try:
                await self.agent.client.patch_status(k8s.PODS, self.name, status, self.namespace)
            except k8s.NotFound:
                raise
            except Exception as exc:  # noqa: BLE001 - apiserver outages are waited out
                _log.warning(
                    "status of %s/%s not written (%s); retrying", self.namespace, self.name, exc
                )
                if await sleep_or_stop(1.0, self.deleted):
                    return
            else:
                return

    def terminate(self) -> None:
        """The pod is being deleted: stop its containers (as the kubelet does), after which
        the worker deletes the pod for good."""
        if self.deleted.is_set():
            return
        self.deleted.set()
        if self.procs:
            task = asyncio.create_task(self._kill_all(), name=f"kill:{self.name}")
            self.agent.background.add(task)
            task.add_done_callback(self.agent.background.discard)

    async def _kill_all(self) -> None:
        for proc in list(self.procs.values()):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        if self.procs:
            _, pending = await asyncio.wait(
                [asyncio.ensure_future(p.wait()) for p in self.procs.values()], timeout=5
            )
            for proc in list(self.procs.values()):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            if pending:
                await asyncio.wait(pending)

    async def _finalise_delete(self) -> None:
        await self._kill_all()
        # The kubelet's last word on a terminating pod: delete it for good, but only this
        # incarnation (a pod recreated under the same name has another uid). A busy apiserver
        # is retried: a pod left behind keeps its namespace Terminating.
        for delay in (0.5, 1.0, 2.0, 5.0, 10.0, 0.0):
            try:
                await self.agent.client.request(
                    "DELETE",
                    k8s.PODS.path(self.namespace, self.name),
                    body={"gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}},
                )
            except (k8s.NotFound, k8s.Conflict):
                return
            except Exception as exc:  # noqa: BLE001 - whatever failed, try again a bit later
                _log.warning("pod %s/%s: final delete failed: %s", self.namespace, self.name, exc)
                await asyncio.sleep(delay)
            else:
                return


class NodeAgent:
    """Registers the nodes and keeps one ``PodWorker`` per pod bound to them."""

    def __init__(self, settings: NodeAgentSettings, client: k8s.ClusterClient) -> None:
        self.settings = settings
        self.client = client
        self.ids = sb.unprivileged_ids(settings.run_as_user)
        self.workers: dict[str, tuple[PodWorker, asyncio.Task[None]]] = {}
        self.background: set[asyncio.Task[None]] = set()
        """Container kills of terminating pods, kept referenced until done."""
        self.nodes = [f"{settings.node_prefix}-{i}" for i in range(settings.nodes)]

    def node_port(self, index: int) -> int:
        return self.settings.kubelet_port + index

    async def register(self) -> None:
        for index, name in enumerate(self.nodes):
            body = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "labels": {
                        "kubernetes.io/hostname": name,
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64",
                        "klt.dev/node-agent": "true",
                    },
                },
                "spec": {},
            }
            with contextlib.suppress(k8s.AlreadyExists):
                await self.client.create(k8s.NODES, body)
            await self._node_status(name, index)

    async def _node_status(self, name: str, index: int) -> None:
        now = _now()
        capacity = {"cpu": "16", "memory": "64Gi", "pods": "250", "ephemeral-storage": "100Gi"}
        conditions = [
            {
                "type": t,
                "status": "False",
                "reason": f"KltNodeHas{r}",
                "lastHeartbeatTime": now,
                "lastTransitionTime": now,
            }
            for t, r in (
                ("MemoryPressure", "SufficientMemory"),
                ("DiskPressure", "NoDiskPressure"),
                ("PIDPressure", "SufficientPID"),
            )
        ]
        conditions.append(
            {
                "type": "Ready",
                "status": "True",
                "reason": "KubeletReady",
                "message": "klt node agent is posting ready status",
                "lastHeartbeatTime": now,
                "lastTransitionTime": now,
            }
        )
        status = {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": conditions,
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.node_port(index)}},
            "nodeInfo": {
                "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": KUBELET_VERSION,
                "operatingSystem": "linux",
                "architecture": "amd64",
                "containerRuntimeVersion": "klt-node-agent://1",
                "osImage": "klt dev stack",
                "kernelVersion": os.uname().release,
                "machineID": name,
                "systemUUID": name,
                "bootID": name,
            },
        }
        await self.client.patch_status(k8s.NODES, name, status)

    async def heartbeat(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            for index, name in enumerate(self.nodes):
                try:
                    await self._renew_lease(name)
                    await self._node_status(name, index)
                except Exception as exc:  # noqa: BLE001 - an apiserver outage must not kill the node
                    _log.warning("heartbeat for %s failed: %s", name, exc)
            await sleep_or_stop(self.settings.heartbeat_seconds, stop)

    async def _renew_lease(self, name: str) -> None:
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now},
        }
        try:
            await self.client.patch(k8s.LEASES, name, {"spec": lease["spec"]}, "kube-node-lease")
        except k8s.NotFound:
            with contextlib.suppress(k8s.AlreadyExists):
                await self.client.create(k8s.LEASES, lease, "kube-node-lease")

    async def watch_pods(self, node: str, stop: asyncio.Event) -> None:
        cache = k8s.WatchCache(self.client, k8s.PODS, field_selector=f"spec.nodeName={node}")
        events = cache.subscribe()
        runner = asyncio.create_task(cache.run(stop), name=f"pods-watch:{node}")
        try:
            await cache.wait_synced()
            for pod in cache.values():
                self._observe(pod, node, "ADDED")
            while not stop.is_set():
                get = asyncio.ensure_future(events.get())
                stopped = asyncio.ensure_future(stop.wait())
                done, _ = await asyncio.wait({get, stopped}, return_when=asyncio.FIRST_COMPLETED)
                stopped.cancel()
                if get not in done:
                    get.cancel()
                    break
                event = get.result()
                self._observe(event.object, node, event.type)
        finally:
            await runner

    def _observe(self, pod: Body, node: str, etype: str) -> None:
        uid = pod["metadata"]["uid"]
        known = self.workers.get(uid)
        if etype == "DELETED":
            if known:
                known[0].terminate()
            return
        if known is None:
            worker = PodWorker(self, pod, node)
            if pod["metadata"].get("deletionTimestamp"):
                # Terminating before this agent knew it (a restart): finish it, never start it.
                worker.deleted.set()
            task = asyncio.create_task(worker.run(), name=f"pod:{pod['metadata']['name']}")
            self.workers[uid] = (worker, task)
            task.add_done_callback(functools.partial(self._forget, uid))
        elif pod["metadata"].get("deletionTimestamp"):
            known[0].terminate()

    def _forget(self, uid: str, _task: asyncio.Task[None]) -> None:
        self.workers.pop(uid, None)

    async def stop_workers(self) -> None:
        for worker, _task in list(self.workers.values()):
            await worker._kill_all()
        tasks = [t for _, t in self.workers.values()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    # -- logs endpoint (what `kubectl logs` reaches through the apiserver) -------------------

    def find_worker(self, namespace: str, name: str) -> PodWorker | None:
        for worker, _ in self.workers.values():
            if worker.namespace == namespace and worker.name == name:
                return worker
        return None

    async def container_logs(self, request: web.Request) -> web.StreamResponse:
        ns, pod, container = (request.match_info[k] for k in ("ns", "pod", "container"))
        worker = self.find_worker(ns, pod)
        path = worker.log_path(container) if worker else None
        if path is None or not path.exists():
            return web.Response(status=404, text=f"no logs for {ns}/{pod}/{container}\n")
        data = await asyncio.to_thread(path.read_bytes)
        if tail := request.query.get("tailLines"):
            data = b"".join(data.splitlines(keepends=True)[-int(tail) :])
        if limit := request.query.get("limitBytes"):
            data = data[: int(limit)]
        follow = request.query.get("follow") in ("true", "1")
        if not follow:
            return web.Response(body=data, content_type="text/plain")
        response = web.StreamResponse()
        response.content_type = "text/plain"
        await response.prepare(request)
        await response.write(data)
        offset = path.stat().st_size
        while worker is not None and not worker.deleted.is_set() and worker.procs:
            await asyncio.sleep(0.2)
            size = path.stat().st_size
            if size > offset:
                with path.open("rb") as fh:
                    fh.seek(offset)
                    await response.write(fh.read(size - offset))
                offset = size
        await response.write_eof()
        return response

    async def serve_logs(self, index: int, tls: ssl.SSLContext, stop: asyncio.Event) -> None:
        app = web.Application()
        app.router.add_get("/containerLogs/{ns}/{pod}/{container}", self.container_logs)
        app.router.add_get("/healthz", _ok)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.node_port(index), ssl_context=tls)
        await site.start()
        try:
            await stop.wait()
        finally:
            await runner.cleanup()


async def _ok(_request: web.Request) -> web.Response:
    return web.Response(text="ok")
