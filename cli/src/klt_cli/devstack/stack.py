"""The local dev stack: Kafka, etcd, kube-apiserver, controller manager, scheduler.

Every process runs detached in its own session with its log, pid file and data
under the state dir, so the stack outlives the `klt dev up` that started it and
later commands (or tests, through `ensure_up`) find and reuse it.

Importing this module has no side effects; nothing runs until a function is called.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from klt_cli.devstack import build, health, paths
from klt_cli.devstack.health import PROBE_TIMEOUT
from klt_cli.devstack.pki import FRONT_PROXY_USER, Pki
from klt_cli.devstack.proc import (
    Progress,
    StackError,
    default_progress,
    file_lock,
    is_alive,
    read_cmdline,
    read_pid,
    rss_kib,
    run_logged,
    spawn_detached,
    stop_all,
    tail,
)

HOST = "127.0.0.1"
NODEAGENT_MODULE = "klt_cli.devstack.nodeagent"
STATE_MARKER = ".klt-state"
STACK_FILE = "stack.json"
KUBE_CONTEXT = "klt-dev"


@dataclass(frozen=True)
class StackConfig:
    """Ports and sizes; each can be overridden by KLT_<FIELD> (e.g. KLT_KAFKA_PORT).

    Defaults are the well-known ports, which suit a machine that runs no other
    cluster; `klt dev up` refuses to start over a port someone else holds.
    """

    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    etcd_port: int = 2379
    etcd_peer_port: int = 2380
    apiserver_port: int = 6443
    controller_manager_port: int = 10257
    scheduler_port: int = 10259
    kafka_heap_mb: int = 512

    @staticmethod
    def env_name(field_name: str) -> str:
        return "KLT_" + field_name.upper()

    @classmethod
    def overrides_from_env(cls, environ: Mapping[str, str] | None = None) -> dict[str, int]:
        env = os.environ if environ is None else environ
        out: dict[str, int] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(cls.env_name(f.name))
            if raw:
                try:
                    out[f.name] = int(raw)
                except ValueError:
                    raise StackError(f"{cls.env_name(f.name)}={raw!r} is not an integer") from None
        return out

    def to_json(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> StackConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: int(str(v)) for k, v in data.items() if k in known})


@dataclass(frozen=True)
class StackInfo:
    """What a client of the running stack needs; returned by `ensure_up`."""

    state_dir: Path
    cache_dir: Path
    bin_dir: Path
    kubeconfig: Path
    kafka_bootstrap: str
    apiserver_url: str
    ca_file: Path
    token_file: Path

    @property
    def token(self) -> str:
        return self.token_file.read_text().split(",", 1)[0].strip()

    def exports(self) -> dict[str, str]:
        """The variables `klt dev env` exports, PATH aside."""
        return {
            "KUBECONFIG": str(self.kubeconfig),
            "KLT_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "KLT_STATE_DIR": str(self.state_dir),
            "KLT_CACHE_DIR": str(self.cache_dir),
            "KLT_DEV_CA": str(self.ca_file),
        }

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """A full process environment for talking to this stack (PATH included)."""
        env = dict(os.environ if base is None else base)
        env.update(self.exports())
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', os.defpath)}"
        return _no_proxy_for_loopback(env)

    def shell_exports(self) -> str:
        lines = [f"export {k}={shlex.quote(v)}" for k, v in self.exports().items()]
        lines.append(f'export PATH={shlex.quote(str(self.bin_dir))}:"$PATH"')
        return "\n".join(lines) + "\n"

    @classmethod
    def load(cls, state_dir: Path | None = None) -> StackInfo:
        """Read the stack description `klt dev up` wrote into state_dir."""
        state = state_dir or paths.state_dir()
        try:
            data = json.loads((state / STACK_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise StackError(f"no dev stack in {state} ({exc}); run `klt dev up`") from None
        return cls._from_json(state, data)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StackInfo:
        """The stack named by `eval "$(klt dev env)"`'s variables (KLT_STATE_DIR first)."""
        env = os.environ if environ is None else environ
        state = Path(env["KLT_STATE_DIR"]) if env.get("KLT_STATE_DIR") else paths.state_dir()
        info = cls.load(state)
        if env.get("KUBECONFIG"):
            info = dataclasses.replace(info, kubeconfig=Path(env["KUBECONFIG"]))
        if env.get("KLT_KAFKA_BOOTSTRAP"):
            info = dataclasses.replace(info, kafka_bootstrap=env["KLT_KAFKA_BOOTSTRAP"])
        return info

    @classmethod
    def _from_json(cls, state: Path, data: Mapping[str, object]) -> StackInfo:
        cfg = data.get("config")
        config = StackConfig.from_json(cfg if isinstance(cfg, dict) else {})
        cache = Path(str(data.get("cache_dir") or paths.cache_dir()))
        pki = Pki(state / "pki")
        return cls(
            state_dir=state,
            cache_dir=cache,
            bin_dir=paths.bin_dir(cache),
            kubeconfig=state / "kubeconfig",
            kafka_bootstrap=f"{HOST}:{config.kafka_port}",
            apiserver_url=f"https://{HOST}:{config.apiserver_port}",
            ca_file=pki.ca_cert,
            token_file=pki.token_file,
        )


@dataclass(frozen=True)
class ServiceSpec:
    """A klt service that `klt dev up` runs as `python -m <module>` next to the stack."""

    name: str
    module: str
    port: int | None = None
    # HTTP(S) path on 127.0.0.1:port that answers 200 once the service is ready;
    # without one, a live process counts as healthy.
    health_path: str | None = None
    tls: bool = False
    env: Mapping[str, str] = field(default_factory=dict)
    start_timeout: float = 60.0


def _service(
    name: str, module: str, port: int, extra_env: Mapping[str, str] | None = None
) -> ServiceSpec:
    # Probes on a port of their own per service; plain-text logs read better in logs/<name>.log.
    return ServiceSpec(
        # Prefixed so that "scheduler" (kube-scheduler) and klt's scheduler never share a
        # pid file or a log.
        name=f"klt-{name}",
        module=module,
        port=port,
        health_path="/readyz",
        env={
            "KLT_OBSERVABILITY__HTTP_HOST": HOST,
            "KLT_OBSERVABILITY__HTTP_PORT": str(port),
            "KLT_OBSERVABILITY__LOG_JSON": "false",
            **(extra_env or {}),
        },
    )


# The webhook's HTTPS port for the apiserver's admission and conversion calls (the chart's
# Service maps 443 to 9443 in a cluster). The apiserver runs on this host, so it calls the
# webhook by URL on 127.0.0.1; no Service would be routable here.
WEBHOOK_ADMISSION_PORT = 18443
PROMETHEUS_PORT = 19090
WEBHOOK_NAMESPACE = "klt-system"
# The conversion webhook the chart's CRDs name (deploy/crds), and its dev-stack URL.
WEBHOOK_SERVICE = "klt-webhook"
WEBHOOK_CONVERT_URL = f"https://{HOST}:{WEBHOOK_ADMISSION_PORT}/convert"


def _webhook_service() -> ServiceSpec:
    base = _service("webhook", "klt_webhook", 18081)
    return dataclasses.replace(
        base,
        env={
            **base.env,
            "KLT_CLUSTER__NAMESPACE": WEBHOOK_NAMESPACE,
            "KLT_ADMISSION__HOST": HOST,
            "KLT_ADMISSION__PORT": str(WEBHOOK_ADMISSION_PORT),
            # Self-managed CA and serving certificate (Secret klt-system/klt-certs), with the
            # address the apiserver dials in its SANs.
            "KLT_CERTS__MODE": "self-managed",
            "KLT_CERTS__EXTRA_DNS_NAMES": '["localhost"]',
            "KLT_CERTS__EXTRA_IP_ADDRESSES": f'["{HOST}"]',
            "KLT_REGISTRATION__MODE": "url",
            "KLT_REGISTRATION__URL_HOST": HOST,
            "KLT_REGISTRATION__CREATE_NAMESPACE": "true",
            # On a developer's machine the webhook process is restarted often; Ignore keeps a
            # stopped webhook from refusing every pod in the stack (gating then falls back to
            # the aggregator's reconciliation). Installs via the chart default to Fail.
            "KLT_REGISTRATION__FAILURE_POLICY": "Ignore",
        },
    )


# `klt dev up` (without --no-services) starts each one through start_services(), each as its
# own process, as the chart runs each as its own Deployment.
SERVICES: tuple[ServiceSpec, ...] = (
    _webhook_service(),
    _service("app-aggregator", "klt_app_aggregator", 18082),
    _service("task-runner", "klt_task_runner", 18083),
    _service("evaluator", "klt_evaluator", 18084),
    _service(
        "scheduler",
        "klt_scheduler",
        18085,
        # The demo's app has a promotion task; Keptn's default keeps that phase off.
        extra_env={"KLT_SCHEDULER__PROMOTION_TASKS_ENABLED": "true"},
    ),
)


@dataclass
class Component:
    name: str
    argv: Callable[[], list[str]]
    health: Callable[[], tuple[bool, str]]
    # A substring of the command line, so a recycled pid is not taken for ours.
    marker: str
    port: int | None
    start_timeout: float
    stop_grace: float
    stop_phase: int
    ports: tuple[int, ...] = ()
    prepare: Callable[[], None] | None = None
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    pid: int | None
    alive: bool
    healthy: bool
    port: int | None
    log: Path
    detail: str
    rss_kib: int | None


def _no_proxy_for_loopback(env: dict[str, str]) -> dict[str, str]:
    # Go honours HTTPS_PROXY; keep every loopback call (webhook, etcd) direct.
    if any(env.get(k) for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")):
        for key in ("NO_PROXY", "no_proxy"):
            current = [p for p in env.get(key, "").split(",") if p]
            extra = [h for h in ("127.0.0.1", "localhost", "::1") if h not in current]
            env[key] = ",".join(current + extra)
    return env


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise StackError("`java` is not on PATH; Kafka 4.x needs a JDK/JRE >= 17")
    return java


class Stack:
    """One dev stack, identified by its state dir."""

    def __init__(
        self,
        state_dir: Path | None = None,
        cache_dir: Path | None = None,
        *,
        overrides: Mapping[str, int] | None = None,
        progress: Progress = default_progress,
    ) -> None:
        self.state = (state_dir or paths.state_dir()).expanduser().resolve()
        self.progress = progress
        self.pki = Pki(self.state / "pki")
        self.overrides = {**StackConfig.overrides_from_env(), **(overrides or {})}
        stored = self._stored()
        # `klt dev status`/`env` from a shell without KLT_CACHE_DIR must still find
        # the binaries of a stack that `up` started with one.
        stored_cache = stored.get("cache_dir")
        if cache_dir is None and not os.environ.get("KLT_CACHE_DIR") and stored_cache:
            cache_dir = Path(str(stored_cache))
        self.cache = (cache_dir or paths.cache_dir()).expanduser().resolve()
        stored_cfg = stored.get("config")
        base = StackConfig.from_json(stored_cfg) if isinstance(stored_cfg, dict) else StackConfig()
        self.stored_config = base if stored else None
        self.config = dataclasses.replace(base, **self.overrides)
        self.services_enabled = bool(stored.get("services", False)) if stored else False

    # --- layout ------------------------------------------------------------------

    @property
    def bin_dir(self) -> Path:
        return paths.bin_dir(self.cache)

    @property
    def kubeconfig(self) -> Path:
        return self.state / "kubeconfig"

    def log(self, name: str) -> Path:
        return self.state / "logs" / f"{name}.log"

    def pid_file(self, name: str) -> Path:
        return self.state / "run" / f"{name}.pid"

    def _bin(self, name: str) -> str:
        return str(self.bin_dir / name)

    def _stored(self) -> dict[str, object]:
        try:
            data = json.loads((self.state / STACK_FILE).read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def info(self) -> StackInfo:
        return StackInfo._from_json(
            self.state, {"config": self.config.to_json(), "cache_dir": str(self.cache)}
        )

    # --- components --------------------------------------------------------------

    def components(self, *, services: bool | None = None) -> list[Component]:
        c = self.config
        kafka_dir = self.state / "kafka"
        etcd_dir = self.state / "etcd"
        comps = [
            Component(
                name="kafka",
                argv=self._kafka_argv,
                health=lambda: health.check_kafka(HOST, c.kafka_port),
                marker=str(kafka_dir / "server.properties"),
                port=c.kafka_port,
                ports=(c.kafka_port, c.kafka_controller_port),
                start_timeout=120.0,
                stop_grace=30.0,
                stop_phase=2,
                prepare=self._kafka_prepare,
            ),
            Component(
                name="etcd",
                argv=lambda: [
                    self._bin("etcd"),
                    "--name=klt-dev",
                    f"--data-dir={etcd_dir}",
                    f"--listen-client-urls=http://{HOST}:{c.etcd_port}",
                    f"--advertise-client-urls=http://{HOST}:{c.etcd_port}",
                    f"--listen-peer-urls=http://{HOST}:{c.etcd_peer_port}",
                    f"--initial-advertise-peer-urls=http://{HOST}:{c.etcd_peer_port}",
                    f"--initial-cluster=klt-dev=http://{HOST}:{c.etcd_peer_port}",
                    # Dev data is disposable; fsync on every write is what makes
                    # etcd slow on shared disks.
                    "--unsafe-no-fsync",
                    "--quota-backend-bytes=2147483648",
                    "--log-level=warn",
                ],
                health=lambda: health.check_http(HOST, c.etcd_port, "/health", expect='"true"'),
                marker=f"--data-dir={etcd_dir}",
                port=c.etcd_port,
                ports=(c.etcd_port, c.etcd_peer_port),
                start_timeout=30.0,
                stop_grace=10.0,
                stop_phase=3,
            ),
            Component(
                name="apiserver",
                argv=self._apiserver_argv,
                health=lambda: self._check_tls(c.apiserver_port, "/readyz", token=True),
                marker=f"--token-auth-file={self.pki.token_file}",
                port=c.apiserver_port,
                ports=(c.apiserver_port,),
                start_timeout=120.0,
                # Its HTTP/2 shutdown waits up to --request-timeout (60s) for open
                # watch streams; all state is in etcd, so a kill loses nothing.
                stop_grace=5.0,
                stop_phase=2,
            ),
            Component(
                name="controller-manager",
                argv=lambda: [
                    self._bin("kube-controller-manager"),
                    *self._kube_client_flags("kube-controller-manager", c.controller_manager_port),
                    f"--service-account-private-key-file={self.pki.sa_key}",
                    f"--root-ca-file={self.pki.ca_cert}",
                    f"--cluster-signing-cert-file={self.pki.ca_cert}",
                    f"--cluster-signing-key-file={self.pki.ca_key}",
                    f"--service-cluster-ip-range={SERVICE_CIDR}",
                    "--cluster-name=klt-dev",
                ],
                health=lambda: self._check_tls(c.controller_manager_port, "/healthz"),
                marker=f"--tls-cert-file={self.pki.cert('kube-controller-manager')}",
                port=c.controller_manager_port,
                ports=(c.controller_manager_port,),
                start_timeout=60.0,
                stop_grace=10.0,
                stop_phase=1,
            ),
            Component(
                name="scheduler",
                argv=lambda: [
                    self._bin("kube-scheduler"),
                    *self._kube_client_flags("kube-scheduler", c.scheduler_port),
                ],
                health=lambda: self._check_tls(c.scheduler_port, "/healthz"),
                marker=f"--tls-cert-file={self.pki.cert('kube-scheduler')}",
                port=c.scheduler_port,
                ports=(c.scheduler_port,),
                start_timeout=60.0,
                stop_grace=10.0,
                stop_phase=1,
            ),
        ]
        if nodeagent_available():
            comps.append(
                Component(
                    name="nodeagent",
                    argv=lambda: [sys.executable, "-m", NODEAGENT_MODULE],
                    health=self._check_nodeagent,
                    marker=NODEAGENT_MODULE,
                    env=self._nodeagent_env(),
                    port=None,
                    start_timeout=30.0,
                    stop_grace=15.0,
                    stop_phase=0,
                )
            )
        if self.services_enabled if services is None else services:
            comps.extend(self._service_component(s) for s in SERVICES)
            if shutil.which("prometheus"):
                comps.append(self._prometheus_component())
        return comps

    def _prometheus_component(self) -> Component:
        """A Prometheus that scrapes the klt services' /metrics (job "klt"), so the demo's
        evaluations are answered by real PromQL about the running system."""
        data = self.state / "prometheus"
        config = data / "prometheus.yml"

        def prepare() -> None:
            data.mkdir(parents=True, exist_ok=True)
            targets = ", ".join(f"'{HOST}:{s.port}'" for s in SERVICES if s.port is not None)
            config.write_text(
                "global:\n  scrape_interval: 2s\n  evaluation_interval: 2s\n"
                "scrape_configs:\n"
                f"  - job_name: klt\n    static_configs:\n      - targets: [{targets}]\n"
            )

        return Component(
            name="prometheus",
            argv=lambda: [
                shutil.which("prometheus") or "/usr/bin/prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={data / 'tsdb'}",
                "--storage.tsdb.retention.time=2h",
                f"--web.listen-address={HOST}:{PROMETHEUS_PORT}",
                "--log.level=warn",
            ],
            health=lambda: health.check_http(HOST, PROMETHEUS_PORT, "/-/ready"),
            marker=f"--config.file={config}",
            port=PROMETHEUS_PORT,
            ports=(PROMETHEUS_PORT,),
            start_timeout=60.0,
            stop_grace=10.0,
            stop_phase=0,
            prepare=prepare,
        )

    def _check_tls(self, port: int, path: str, *, token: bool = False) -> tuple[bool, str]:
        try:
            tls = health.tls_context(self.pki.ca_cert)
            bearer = self.pki.admin_token() if token else None
        except OSError as exc:
            return False, f"no dev CA/token yet ({exc})"
        return health.check_http(HOST, port, path, tls=tls, token=bearer)

    def _check_nodeagent(self) -> tuple[bool, str]:
        # Ready once its first node is Ready: from then on the scheduler can
        # bind pods, which is what callers of `up` wait for.
        prefix = os.environ.get("KLT_NODEAGENT_NODE_PREFIX", "klt-node")
        node = f"{prefix}-0"
        try:
            obj = health.http_get_json(
                HOST,
                self.config.apiserver_port,
                f"/api/v1/nodes/{node}",
                tls=health.tls_context(self.pki.ca_cert),
                token=self.pki.admin_token(),
                timeout=PROBE_TIMEOUT,
            )
        except (OSError, ConnectionError, ValueError) as exc:
            return False, f"node {node}: {exc}"
        status = obj.get("status") if isinstance(obj, dict) else None
        conditions = status.get("conditions") if isinstance(status, dict) else None
        for cond in conditions if isinstance(conditions, list) else []:
            if isinstance(cond, dict) and cond.get("type") == "Ready":
                if not self._heartbeat_since_start(cond.get("lastHeartbeatTime")):
                    # Kept etcd data still holds the previous agent's Ready node.
                    return False, f"node {node}: no heartbeat from this agent yet"
                ready = cond.get("status") == "True"
                return ready, f"node {node} Ready={cond.get('status')}"
        return False, f"node {node} reports no Ready condition yet"

    def _heartbeat_since_start(self, stamp: object) -> bool:
        try:
            started = self.pid_file("nodeagent").stat().st_mtime
            beat = dt.datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
        except (OSError, ValueError):
            return False
        # RFC 3339 timestamps have whole seconds.
        return beat >= started - 1.0

    def _nodeagent_env(self) -> dict[str, str]:
        # The agent's settings are KLT_NODEAGENT_*; values already in the caller's
        # environment win so a developer can tune the agent without code changes.
        defaults = {
            "KLT_NODEAGENT_KUBECONFIG": str(self.kubeconfig),
            "KLT_NODEAGENT_STATE_DIR": str(self.state / "nodeagent"),
        }
        root = paths.repo_root()
        if root is not None:
            defaults["KLT_NODEAGENT_REPO_ROOT"] = str(root)
        return {k: os.environ.get(k, v) for k, v in defaults.items()}

    def _service_component(self, spec: ServiceSpec) -> Component:
        def check() -> tuple[bool, str]:
            if spec.port is None or spec.health_path is None:
                return True, "running"
            if spec.tls:
                return self._check_tls(spec.port, spec.health_path)
            return health.check_http(HOST, spec.port, spec.health_path)

        return Component(
            name=spec.name,
            argv=lambda: [sys.executable, "-m", spec.module],
            health=check,
            marker=spec.module,
            port=spec.port,
            ports=() if spec.port is None else (spec.port,),
            start_timeout=spec.start_timeout,
            stop_grace=15.0,
            stop_phase=0,
            env=spec.env,
        )

    def _kube_client_flags(self, name: str, port: int) -> list[str]:
        cert, key = self.pki.cert(name), self.pki.key(name)
        kc = str(self.kubeconfig)
        return [
            f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
            "--leader-elect=false",
            f"--bind-address={HOST}",
            f"--secure-port={port}",
            f"--tls-cert-file={cert}",
            f"--tls-private-key-file={key}",
            "--v=1",
        ]

    def _apiserver_argv(self) -> list[str]:
        c, p = self.config, self.pki
        return [
            self._bin("kube-apiserver"),
            f"--etcd-servers=http://{HOST}:{c.etcd_port}",
            f"--bind-address={HOST}",
            f"--secure-port={c.apiserver_port}",
            f"--tls-cert-file={p.cert('apiserver')}",
            f"--tls-private-key-file={p.key('apiserver')}",
            f"--client-ca-file={p.ca_cert}",
            f"--token-auth-file={p.token_file}",
            f"--requestheader-client-ca-file={p.ca_cert}",
            f"--requestheader-allowed-names={FRONT_PROXY_USER}",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={p.cert('front-proxy-client')}",
            f"--proxy-client-key-file={p.key('front-proxy-client')}",
            # No kube-proxy: aggregated APIs are reached at their endpoints' IPs.
            "--enable-aggregator-routing=true",
            "--authorization-mode=RBAC",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=true",
            # No kubelet mints tokens into pods here, and the admission plugin
            # would reject every pod whose service account has no token yet.
            "--disable-admission-plugins=ServiceAccount",
            f"--service-account-issuer=https://{HOST}:{c.apiserver_port}",
            f"--service-account-key-file={p.sa_pub}",
            f"--service-account-signing-key-file={p.sa_key}",
            "--profiling=false",
            "--v=1",
        ]

    # --- Kafka -------------------------------------------------------------------

    def _kafka_files(self) -> tuple[Path, Path, Path]:
        d = self.state / "kafka"
        return d / "server.properties", d / "log4j2.properties", d / "data"

    def _kafka_prepare(self) -> None:
        c = self.config
        props, log4j, data = self._kafka_files()
        data.mkdir(parents=True, exist_ok=True)
        # A static voter set: the 4.x StorageTool then formats without
        # --standalone, and the file fully describes the single-node quorum.
        props.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@{HOST}:{c.kafka_controller_port}",
                    f"listeners=PLAINTEXT://{HOST}:{c.kafka_port},"
                    f"CONTROLLER://{HOST}:{c.kafka_controller_port}",
                    f"advertised.listeners=PLAINTEXT://{HOST}:{c.kafka_port}",
                    "controller.listener.names=CONTROLLER",
                    "inter.broker.listener.name=PLAINTEXT",
                    "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                    f"log.dirs={data}",
                    "num.partitions=1",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=10",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    # Consumers in tests join one at a time; waiting 3s for more
                    # members to arrive only slows every test down.
                    "group.initial.rebalance.delay.ms=0",
                    "auto.create.topics.enable=true",
                    "",
                ]
            )
        )
        log4j.write_text(KAFKA_LOG4J2)
        if (data / "meta.properties").is_file():
            return
        cluster_id = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()
        self.progress(f"{'kafka':<18} formatting storage (cluster id {cluster_id})")
        run_logged(
            [
                _java(),
                "-Xmx256m",
                f"-Dlog4j2.configurationFile={log4j}",
                "-cp",
                str(build.kafka_lib_dir(self.cache) / "*"),
                "kafka.tools.StorageTool",
                "format",
                "--ignore-formatted",
                "-t",
                cluster_id,
                "-c",
                str(props),
            ],
            cwd=self.state,
            env=dict(os.environ),
            log_path=self.log("kafka"),
            label="kafka storage format",
            timeout=120.0,
            progress=self.progress,
        )

    def _kafka_argv(self) -> list[str]:
        props, log4j, _ = self._kafka_files()
        heap = self.config.kafka_heap_mb
        return [
            _java(),
            f"-Xms{min(256, heap)}m",
            f"-Xmx{heap}m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}",
            f"-Dkafka.logs.dir={self.state / 'logs'}",
            "-cp",
            str(build.kafka_lib_dir(self.cache) / "*"),
            "kafka.Kafka",
            str(props),
        ]

    # --- lifecycle ---------------------------------------------------------------

    def _pid(self, comp: Component) -> int | None:
        pid = read_pid(self.pid_file(comp.name))
        return pid if pid is not None and is_alive(pid, comp.marker) else None

    def _child_env(self, comp: Component) -> dict[str, str]:
        info = self.info()
        env = info.env()
        # What the klt services' settings read (ServiceSettings, KLT_ prefix).
        env.setdefault("KLT_CLUSTER__KUBECONFIG", str(info.kubeconfig))
        env.setdefault("KLT_BUS__BOOTSTRAP_SERVERS", info.kafka_bootstrap)
        env.update(comp.env)
        return env

    def _start(self, comp: Component) -> int:
        busy = [p for p in comp.ports if health.port_in_use(HOST, p)]
        if busy:
            raise StackError(
                f"{comp.name}: port(s) {busy} on {HOST} are taken by another process "
                f"(not this stack's {comp.name}); free them or pick others, e.g. "
                f"{' '.join(_port_hint(comp.name))}"
            )
        if comp.prepare is not None:
            comp.prepare()
        pid = spawn_detached(comp.argv(), env=self._child_env(comp), log_path=self.log(comp.name))
        self.pid_file(comp.name).parent.mkdir(parents=True, exist_ok=True)
        self.pid_file(comp.name).write_text(f"{pid}\n")
        self.progress(f"{comp.name:<18} started (pid {pid}, log {self.log(comp.name)})")
        return pid

    def _ensure_started(self, comp: Component) -> tuple[int, bool]:
        """(pid, reused): reuse a live process, else start one."""
        pid = self._pid(comp)
        if pid is not None:
            running = read_cmdline(pid)
            if not running or running == comp.argv():
                return pid, True
            # A newer klt changed this component's flags: a silently reused old
            # process would keep the old behaviour until someone ran `down`.
            self.progress(f"{comp.name:<18} command line changed; restarting (pid {pid})")
            stop_all([(comp.name, pid, comp.marker)], comp.stop_grace, self.progress)
        return self._start(comp), False

    def _wait_healthy(self, comp: Component, pid: int, timeout: float | None) -> float:
        limit = comp.start_timeout if timeout is None else timeout
        start = time.monotonic()
        detail = "not checked yet"
        while True:
            ok, detail = comp.health()
            if ok:
                return time.monotonic() - start
            if not is_alive(pid, comp.marker):
                raise StackError(
                    f"{comp.name} exited during start-up (last check: {detail}); "
                    f"log {self.log(comp.name)}:\n{tail(self.log(comp.name))}"
                )
            if time.monotonic() - start > limit:
                raise StackError(
                    f"{comp.name} not healthy after {limit:.0f}s (last check: {detail}); "
                    f"log {self.log(comp.name)}:\n{tail(self.log(comp.name))}"
                )
            time.sleep(0.25)

    def _bring_up(self, comps: Sequence[Component], timeout: float | None) -> None:
        """Start every component of a group, then wait for all of them."""
        started: list[tuple[Component, int, bool]] = []
        for comp in comps:
            pid, reused = self._ensure_started(comp)
            started.append((comp, pid, reused))
        for comp, pid, reused in started:
            waited = self._wait_healthy(comp, pid, timeout)
            verb = "reused" if reused else "healthy"
            self.progress(f"{comp.name:<18} {verb} (pid {pid}, {waited:.1f}s)")

    def _write_client_files(self) -> None:
        info = self.info()
        cluster = {
            "server": info.apiserver_url,
            "certificate-authority-data": self.pki.ca_bundle_b64(),
        }
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": KUBE_CONTEXT, "cluster": cluster}],
            "users": [{"name": "klt-admin", "user": {"token": self.pki.admin_token()}}],
            "contexts": [
                {
                    "name": KUBE_CONTEXT,
                    "context": {"cluster": KUBE_CONTEXT, "user": "klt-admin"},
                }
            ],
            "current-context": KUBE_CONTEXT,
        }
        fd = os.open(self.kubeconfig, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump(kubeconfig, f, sort_keys=False)
        (self.state / "env.sh").write_text(info.shell_exports())

    def _write_stack_file(self, services: bool) -> None:
        payload = {
            "config": self.config.to_json(),
            "cache_dir": str(self.cache),
            "services": services,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (self.state / STACK_FILE).write_text(json.dumps(payload, indent=2) + "\n")

    def _check_config_change(self) -> None:
        if self.stored_config is None or self.stored_config == self.config:
            return
        running = [c.name for c in self.components() if self._pid(c) is not None]
        if running:
            raise StackError(
                f"the running stack ({', '.join(running)}) uses {self.stored_config}; "
                f"requested {self.config}. Run `klt dev down` first to change ports."
            )

    def up(
        self, *, services: bool = True, build_missing: bool = True, timeout: float | None = None
    ) -> StackInfo:
        """Build if needed, then start or reuse every component; returns when all are healthy."""
        t0 = time.monotonic()
        missing = build.missing_artifacts(self.cache)
        if missing:
            if not build_missing:
                raise StackError(f"not built yet: {', '.join(missing)}; run `klt dev build`")
            build.build_all(self.cache, progress=self.progress)
        elif not self.bin_dir.is_dir():
            build.build_all(self.cache, progress=self.progress)
        self.state.mkdir(parents=True, exist_ok=True)
        with file_lock(self.state / ".lock", timeout=600, what="up/down"):
            (self.state / STATE_MARKER).touch()
            self._check_config_change()
            # Services started by an earlier `up` keep running under --no-services,
            # so they stay in status until `down`.
            self.services_enabled = services or self.services_enabled
            self.pki.ensure()
            self._write_client_files()
            self._write_stack_file(self.services_enabled)
            comps = {c.name: c for c in self.components()}
            # Kafka's JVM needs the longest to start and depends on nothing, so it
            # boots while the control plane comes up and is waited for last.
            kafka_pid, kafka_reused = self._ensure_started(comps["kafka"])
            self._bring_up([comps["etcd"]], timeout)
            self._bring_up([comps["apiserver"]], timeout)
            self._bring_up([comps["controller-manager"], comps["scheduler"]], timeout)
            apply_crds(self.info(), self.progress)
            waited = self._wait_healthy(comps["kafka"], kafka_pid, timeout)
            verb = "reused" if kafka_reused else "healthy"
            self.progress(f"{'kafka':<18} {verb} (pid {kafka_pid}, {waited:.1f}s)")
            if "nodeagent" in comps:
                self._bring_up([comps["nodeagent"]], timeout)
            if services:
                start_services(self, timeout=timeout)
        info = self.info()
        self.progress(f'stack ready in {time.monotonic() - t0:.1f}s; eval "$(klt dev env)"')
        return info

    def start_component(self, comp: Component, timeout: float | None = None) -> None:
        """Start (or reuse) one component and wait for its health check."""
        self._bring_up([comp], timeout)

    def down(self, *, purge: bool = False) -> None:
        if not self.state.exists():
            self.progress(f"nothing to stop: {self.state} does not exist")
            return
        with file_lock(self.state / ".lock", timeout=600, what="up/down"):
            comps = self.components(services=True)
            # Clients first (agents, services, controllers), then the apiserver
            # and Kafka, and etcd last so the apiserver can shut down cleanly.
            for phase in sorted({c.stop_phase for c in comps}):
                group = [c for c in comps if c.stop_phase == phase]
                targets = []
                for comp in group:
                    pid = self._pid(comp)
                    if pid is not None:
                        targets.append((comp.name, pid, comp.marker))
                if targets:
                    stop_all(targets, max(c.stop_grace for c in group), self.progress)
                for comp in group:
                    self.pid_file(comp.name).unlink(missing_ok=True)
            if (self.state / STACK_FILE).is_file():
                self.services_enabled = False
                self._write_stack_file(False)
            self.progress("stopped")
        if purge:
            if not (self.state / STATE_MARKER).exists():
                raise StackError(f"refusing to delete {self.state}: it has no {STATE_MARKER}")
            shutil.rmtree(self.state)
            self.progress(f"deleted {self.state}")

    def status(self) -> list[ComponentStatus]:
        out = []
        for comp in self.components():
            pid = read_pid(self.pid_file(comp.name))
            alive = pid is not None and is_alive(pid, comp.marker)
            healthy, detail = comp.health() if alive else (False, "not running")
            out.append(
                ComponentStatus(
                    name=comp.name,
                    pid=pid if alive else None,
                    alive=alive,
                    healthy=healthy,
                    port=comp.port,
                    log=self.log(comp.name),
                    detail=detail,
                    rss_kib=rss_kib(pid) if alive and pid is not None else None,
                )
            )
        return out


SERVICE_CIDR = "10.0.0.0/24"

KAFKA_LOG4J2 = """\
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.controller.name = org.apache.kafka.controller
logger.controller.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.raft.name = org.apache.kafka.raft
logger.raft.level = WARN
"""


def _port_hint(name: str) -> list[str]:
    fields = {
        "kafka": ("kafka_port", "kafka_controller_port"),
        "etcd": ("etcd_port", "etcd_peer_port"),
        "apiserver": ("apiserver_port",),
        "controller-manager": ("controller_manager_port",),
        "scheduler": ("scheduler_port",),
    }.get(name, ())
    return [f"{StackConfig.env_name(f)}=<port>" for f in fields] or ["(see the service's spec)"]


def nodeagent_available() -> bool:
    """Whether the node agent (a fake kubelet) is installed alongside this package."""
    try:
        return importlib.util.find_spec(NODEAGENT_MODULE) is not None
    except (ImportError, ValueError):
        return False


def start_services(
    stack: Stack, *, services: Sequence[ServiceSpec] | None = None, timeout: float | None = None
) -> None:
    """Start (or reuse) each klt service in SERVICES and wait for its health check.

    This is the hook `klt dev up` calls after the infrastructure is healthy; with
    no services registered it does nothing.
    """
    specs = SERVICES if services is None else services
    if not specs:
        stack.progress("no klt services registered yet (infrastructure only)")
        return
    for spec in specs:
        stack.start_component(stack._service_component(spec), timeout)
    if services is None and shutil.which("prometheus"):
        stack.start_component(stack._prometheus_component(), timeout)


def crd_names(files: Sequence[Path]) -> list[str]:
    names = []
    for f in files:
        try:
            docs = list(yaml.safe_load_all(f.read_text()))
        except yaml.YAMLError as exc:
            raise StackError(f"{f}: not valid YAML: {exc}") from None
        for doc in docs:
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                name = (doc.get("metadata") or {}).get("name")
                if isinstance(name, str):
                    names.append(name)
    return names


def _kubectl(info: StackInfo, args: Sequence[str], timeout: float) -> str:
    argv = [str(info.bin_dir / "kubectl"), f"--kubeconfig={info.kubeconfig}", *args]
    try:
        out = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, env=info.env(), check=False
        )
    except subprocess.TimeoutExpired:
        raise StackError(f"`{shlex.join(argv)}` timed out after {timeout:.0f}s") from None
    if out.returncode != 0:
        raise StackError(f"`{shlex.join(argv)}` failed ({out.returncode}):\n{out.stderr.strip()}")
    return out.stdout


def apply_crds(
    info: StackInfo, progress: Progress, crd_dir: Path | None = None, timeout: float = 60.0
) -> list[str]:
    """Server-side apply every YAML in deploy/crds and wait until each CRD is Established."""
    directory = crd_dir or paths.crd_dir()
    if directory is None or not directory.is_dir():
        progress("no deploy/crds directory found (set KLT_REPO_ROOT); skipping CRDs")
        return []
    files = sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    if not files:
        progress(f"no CRDs in {directory} yet; skipping")
        return []
    names = crd_names(files)
    files = _with_dev_conversion(files, info.state_dir / "crds")
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    stamp = info.state_dir / "crds.applied"
    # Re-applying 16 CRDs costs a kubectl run (~1.5s) on every warm `up`; skip it
    # when the files are unchanged and the apiserver still has each one Established.
    if stamp.is_file() and stamp.read_text() == digest.hexdigest() and names:
        missing = _not_established(info, names)
        if not missing:
            progress(f"{len(names)} CRD(s) from {directory} unchanged and Established")
            return names
    args = ["apply", "--server-side", "--force-conflicts", "--field-manager=klt-dev"]
    for f in files:
        args += ["-f", str(f)]
    _kubectl(info, args, timeout)
    if names:
        _kubectl(
            info,
            [
                "wait",
                "--for=condition=Established",
                f"--timeout={int(timeout)}s",
                *(f"crd/{n}" for n in names),
            ],
            timeout + 10,
        )
    stamp.write_text(digest.hexdigest())
    progress(f"applied {len(files)} file(s) from {directory}; {len(names)} CRD(s) Established")
    return names


def _with_dev_conversion(files: Sequence[Path], out_dir: Path) -> list[Path]:
    """The CRD files with the conversion webhook's Service reference replaced by its dev URL.

    The webhook service rewrites the conversion clientConfig of the CRDs it serves (a URL
    here) and injects its caBundle. If this apply then put the chart's Service reference back,
    the CRD would hold both a url and a service, which the apiserver rejects, and `up` would
    fail; applying the URL makes this apply and the webhook agree, and the webhook's caBundle
    (a field this apply never sets) survives re-applies.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    rendered: list[Path] = []
    for f in files:
        text = f.read_text()
        docs = list(yaml.safe_load_all(text))
        changed = False
        for doc in docs:
            webhook = ((doc or {}).get("spec") or {}).get("conversion", {}).get("webhook") or {}
            config = webhook.get("clientConfig") or {}
            if (config.get("service") or {}).get("name") == WEBHOOK_SERVICE:
                webhook["clientConfig"] = {"url": WEBHOOK_CONVERT_URL}
                changed = True
        if not changed:
            rendered.append(f)
            continue
        target = out_dir / f.name
        body = yaml.safe_dump_all(docs, sort_keys=False)
        if not target.is_file() or target.read_text() != body:
            target.write_text(body)
        rendered.append(target)
    return rendered


def _not_established(info: StackInfo, names: Sequence[str]) -> list[str]:
    """Names among `names` the apiserver lacks or has not Established (all on error)."""
    host, _, port = info.apiserver_url.removeprefix("https://").rpartition(":")
    try:
        listing = health.http_get_json(
            host,
            int(port),
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            tls=health.tls_context(info.ca_file),
            token=info.token,
        )
    except (OSError, ConnectionError, ValueError):
        return list(names)
    established = set()
    items = listing.get("items", []) if isinstance(listing, dict) else []
    for item in items:
        conditions = (item.get("status") or {}).get("conditions") or []
        if any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
            established.add((item.get("metadata") or {}).get("name"))
    return [n for n in names if n not in established]


def ensure_up(
    *,
    services: bool = True,
    state_dir: Path | None = None,
    cache_dir: Path | None = None,
    overrides: Mapping[str, int] | None = None,
    progress: Progress = default_progress,
    timeout: float | None = None,
) -> StackInfo:
    """The test harness's entry: build if needed, reuse a healthy stack or start one."""
    stack = Stack(state_dir, cache_dir, overrides=overrides, progress=progress)
    return stack.up(services=services, timeout=timeout)
