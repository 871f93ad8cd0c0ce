"""Settings shared by every klt service.

One root object per process, built once in the entry point from the environment
(``KLT_`` prefix, ``__`` between nested groups, e.g. ``KLT_BUS__BOOTSTRAP_SERVERS``) and passed
down explicitly. Nothing reads the environment after start-up. Every field states its unit and
why it has its default. Services subclass ``ServiceSettings`` to add their own group.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class _Group(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class BusSettings(_Group):
    """How the service reaches Kafka and how its consumers behave."""

    bootstrap_servers: str = "127.0.0.1:9092"
    """Comma-separated host:port list of Kafka brokers."""

    topic_prefix: str = ""
    """Prepended to every topic name. Lets several installations (or tests) share one broker."""

    partitions: int = 6
    """Partitions per topic created at start-up. Bounds how many instances of one service can
    share a topic's work; six leaves room to scale each service to six replicas."""

    replication_factor: int = 1
    """Replication factor for topics created at start-up. 1 suits the single-broker dev stack;
    production sets 3."""

    handler_retry_delays: tuple[float, ...] = (0.2, 1.0, 5.0)
    """Seconds to wait between attempts when a handler raises a temporary error. After the last
    one the message goes to the dead-letter topic, so one bad message never blocks a partition
    for long and never loops forever."""

    max_poll_records: int = 100
    """Upper bound on records fetched per poll; keeps the in-flight set (and the shutdown drain)
    small."""

    session_timeout_ms: int = 10_000
    """Consumer-group session timeout. A killed member's partitions move to the survivors after
    at most this long."""

    heartbeat_interval_ms: int = 1_000
    """Heartbeat period; well under a third of the session timeout, as Kafka requires."""

    request_timeout_ms: int = 30_000
    """Producer and admin request timeout."""

    connect_retry_delays: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)
    """Seconds between attempts to reach the brokers when a client starts. All services and Kafka
    start together in the dev stack and after a node restart; about half a minute of patience
    avoids a crash-loop there, while a really missing broker still fails the pod visibly."""

    drain_grace_seconds: float = 10.0
    """Seconds a consumer lets in-flight handlers finish when its partitions are revoked or it
    stops; handlers still running are then cancelled and their messages redelivered. Kept
    below ``ShutdownSettings.grace_seconds`` so the final commit and the group leave still fit;
    the consumer's rebalance timeout is derived from it, since other members wait for us."""

    lag_interval_seconds: float = Field(default=5.0, gt=0)
    """Seconds between refreshes of the ``klt_bus_consumer_lag`` gauge. Each refresh reads
    offsets the consumer already holds (no broker round trip), so this only bounds how stale the
    gauge may be; a third of a typical 15s scrape interval keeps it current enough."""


class ClusterSettings(_Group):
    """How the service reaches the Kubernetes apiserver."""

    kubeconfig: str | None = None
    """Path to a kubeconfig file. None means in-cluster configuration (the service account)."""

    namespace: str = "klt-system"
    """The namespace klt runs in; the fallback namespace for definitions, as Keptn's."""

    retry_delays: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0)
    """Seconds between attempts for apiserver calls that failed with a connection error, 5xx or
    429. Covers an apiserver restart without turning a real outage into a retry storm."""

    conflict_retries: int = 5
    """Attempts for read-modify-write updates that hit a 409 Conflict."""

    request_timeout: float = 10.0
    """Seconds before one apiserver request is abandoned."""

    watch_timeout: int = 300
    """Seconds a watch request stays open before it is renewed (server-side timeoutSeconds)."""


class ObservabilitySettings(_Group):
    """Logs, metrics, traces and probes."""

    http_host: str = "0.0.0.0"  # noqa: S104 - probes and scrapes come from outside the pod
    """Address of the health and metrics server."""

    http_port: int = 8080
    """Port of /healthz, /readyz and /metrics. 0 picks a free port (tests)."""

    log_level: str = "INFO"
    """Root log level."""

    log_json: bool = True
    """Structured JSON logs (one object per line). Off gives plain text for local reading."""

    otlp_endpoint: str | None = None
    """OTLP gRPC endpoint (host:port). None installs no exporter; spans are still propagated."""


class ShutdownSettings(_Group):
    """Staged shutdown on SIGTERM."""

    grace_seconds: float = 20.0
    """How long in-flight messages may take to finish before they are cancelled. Kept below the
    pod's terminationGracePeriodSeconds (30 s by default) so offsets are committed before the
    kubelet's SIGKILL."""


class ServiceSettings(BaseSettings):
    """The root settings of one klt process."""

    model_config = SettingsConfigDict(
        env_prefix="KLT_",
        env_nested_delimiter="__",
        frozen=True,
        extra="ignore",
        use_attribute_docstrings=True,
    )

    service_name: str = "klt"
    """Names the service in logs, traces, metrics and Kafka client ids."""

    instance_id: str = Field(default="", description="Pod name or another per-instance id.")
    """Distinguishes replicas of one service; defaults to the host name when empty."""

    bus: BusSettings = BusSettings()
    cluster: ClusterSettings = ClusterSettings()
    observability: ObservabilitySettings = ObservabilitySettings()
    shutdown: ShutdownSettings = ShutdownSettings()
