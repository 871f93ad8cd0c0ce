"""Settings of the job executor (``KLT_JOB_EXECUTOR__*``).

The group sits on ``TaskRunnerSettings.job_executor``. Each field names the job-executor-service
(JES) variable or Helm value it replaces, where there is one. List fields take JSON from the
environment (``KLT_JOB_EXECUTOR__ALLOWED_IMAGES='["docker.io/myorg/*"]'``), except
``allowed_images``, which also takes JES's comma-separated form.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_settings import NoDecode

from klt_task_runner.jobexecutor import config


def _comma_separated(value: Any) -> Any:
    # ALLOWED_IMAGE_LIST is "a,b,c"; a JSON list is accepted too. Empty entries are dropped.
    if isinstance(value, str):
        text = value.strip()
        value = json.loads(text) if text.startswith("[") else text.split(",")
    if isinstance(value, list | tuple):
        return tuple(str(v).strip() for v in value if str(v).strip())
    return value


def _case_insensitive(model: type[BaseModel]) -> BeforeValidator:
    """Accept ``RunAsUser`` for ``runAsUser``: JES read these JSON files with Go's
    case-insensitive decoder, and Helm values copied from its chart use capitalised keys."""

    def normalise(value: Any, target: type[BaseModel] = model) -> Any:
        if not isinstance(value, dict):
            return value
        by_lower: dict[str, tuple[str, Any]] = {}
        for name, info in target.model_fields.items():
            alias = info.alias or name
            nested = info.annotation
            by_lower[alias.lower()] = (alias, nested)
        out: dict[str, Any] = {}
        for key, item in value.items():
            alias, nested = by_lower.get(str(key).lower(), (str(key), None))
            inner = _model_in(nested)
            out[alias] = normalise(item, inner) if inner is not None else item
        return out

    return BeforeValidator(normalise)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


class ResourceDefaults(BaseModel):
    """Requests and limits of a task that has no ``resources`` block.

    JES: ``DEFAULT_RESOURCE_{LIMITS,REQUESTS}_{CPU,MEMORY}``; the defaults are its Helm chart's.
    An empty string leaves that one unset.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    limits_cpu: str = "1"
    """CPU limit (Kubernetes quantity). One core keeps a runaway test from starving the node."""

    limits_memory: str = "512Mi"
    """Memory limit (quantity). Enough for the usual test tools (k6, locust, curl)."""

    requests_cpu: str = "50m"
    """CPU request (quantity). Small, so that many short jobs schedule on a busy cluster."""

    requests_memory: str = "128Mi"
    """Memory request (quantity)."""


class JobExecutorSettings(BaseModel):
    """The job executor mode: Keptn CloudEvents in, Kubernetes Jobs run, Keptn events out."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    enabled: bool = False
    """Consume Keptn CloudEvents and run jobs for them. Off by default: the task-runner's main
    job is KeptnTasks, and this mode needs its namespace and configuration set up first."""

    input_topic: str = "keptn.events"
    """Topic (before ``bus.topic_prefix``) carrying Keptn's CloudEvents: ``*.triggered`` and
    every other type. JES got these from the Keptn distributor (NATS)."""

    output_topic: str = "keptn.events"
    """Topic (before the prefix) for the ``.started`` and ``.finished`` events. The same as the
    input by default, as on Keptn's single event stream, so actions may also match the
    job executor's own ``.finished`` events (a silent notification action, say). Only
    ``.triggered`` events are ever answered, so this cannot loop."""

    consumer_group: str = "klt-job-executor"
    """Kafka consumer group. Replicas of the task-runner share the input topic's partitions
    (JES issue #104: each event goes to exactly one instance)."""

    source: str = "job-executor-service"
    """CloudEvents ``source`` of the events sent. JES's name, so that Keptn's bridge and
    sequences attribute them as before."""

    config_namespace: str = "klt-jobs"
    """Namespace holding the job configuration ConfigMaps (see docs/job-executor.md)."""

    job_namespace: str = "klt-jobs"
    """Namespace of the Jobs of tasks without ``namespace``. JES: ``JOB_NAMESPACE``. Keep it
    apart from the klt services' own namespace: jobs run user-chosen images."""

    allowed_images: Annotated[tuple[str, ...], NoDecode, BeforeValidator(_comma_separated)] = ()
    """Globs for the images tasks may use, whole-string, where ``*`` also matches ``/`` and
    ``:`` (JES: ``ALLOWED_IMAGE_LIST``, comma-separated). Empty, or any entry ``*``, allows
    every image; a warning says so at start-up."""

    allow_privileged_jobs: bool = False
    """Allow ``securityContext.privileged: true`` in tasks (JES: ``ALLOW_PRIVILEGED_JOBS``).
    Off: a privileged container is root on the node."""

    default_service_account: str = "default"
    """Service account of tasks without ``serviceAccount`` (JES:
    ``DEFAULT_JOB_SERVICE_ACCOUNT``). Such pods also get ``automountServiceAccountToken:
    false``, so a job has no Kubernetes API access unless its task names an account."""

    default_resources: ResourceDefaults = ResourceDefaults()
    """Applied to tasks without a ``resources`` block."""

    default_security_context: Annotated[
        config.SecurityContext, _case_insensitive(config.SecurityContext)
    ] = config.SecurityContext(
        privileged=False,
        allow_privilege_escalation=False,
        read_only_root_filesystem=True,
        run_as_non_root=True,
        run_as_user=1000,
        run_as_group=2000,
        capabilities=config.Capabilities(drop=["ALL"]),
        seccomp_profile=config.SeccompProfile(type="RuntimeDefault"),
    )
    """Container security context a task's ``securityContext`` is merged over (field by
    field; ``capabilities`` and ``seccompProfile`` as wholes). JES's Helm default: no root,
    no privilege escalation, read-only root filesystem, all capabilities dropped. Keys are
    case-insensitive (``RunAsUser``), as in JES's JSON file."""

    default_pod_security_context: Annotated[
        config.PodSecurityContext, _case_insensitive(config.PodSecurityContext)
    ] = config.PodSecurityContext(
        run_as_user=1000,
        run_as_group=2000,
        run_as_non_root=True,
        fs_group=2000,
        seccomp_profile=config.SeccompProfile(type="RuntimeDefault"),
    )
    """Pod security context of every job (JES's Helm default); keys are case-insensitive."""

    always_send_finished_event: bool = True
    """Answer a ``.triggered`` event for which no configuration exists with ``.started`` and a
    failed ``.finished`` (JES: ``ALWAYS_SEND_FINISHED_EVENT``, documented but ignored by its
    code, so such sequences hung: JES #298). Turn it off when the input topic carries
    ``.triggered`` events that other services answer."""

    max_poll_duration: int = Field(default=300, ge=1)
    """Seconds to wait for a task's Job to finish when its task sets no ``maxPollDuration``.
    JES's default; long load tests set more per task (JES #406)."""

    ttl_seconds_after_finished: int = Field(default=21600, ge=60)
    """Seconds a finished Job (and its pod and logs) is kept, when its task sets no
    ``ttlSecondsAfterFinished``: six hours to read logs, as in JES."""

    task_deadline_seconds: int = Field(default=0, ge=0)
    """``activeDeadlineSeconds`` of every Job; 0 sets none. JES: ``TASK_DEADLINE_SECONDS``."""

    work_volume_size: str = "20Mi"
    """``sizeLimit`` of the writable ``emptyDir`` mounted at ``/keptn`` (JES's fixed 20Mi,
    here configurable: JES #170)."""

    managed_by: str = "klt-job-executor"
    """Value of the ``app.kubernetes.io/managed-by`` label on Jobs and their pods (JES:
    ``FULL_DEPLOYMENT_NAME``); network policies select job pods by it."""

    job_labels: dict[str, str] = {}
    """Extra labels on every Job (JES: ``jobConfig.labels``). Generated labels win on a
    clash."""

    log_tail_lines: int = Field(default=200, ge=1)
    """Lines of each container's log put into the ``.finished`` message: the end of a log is
    where a failure explains itself."""

    max_log_bytes: int = Field(default=16_384, ge=256)
    """Bytes kept of each container's log (its end). Logs travel inside the event."""

    max_message_bytes: int = Field(default=65_536, ge=1024)
    """Upper bound of a ``.finished`` message. Keptn's distributor refused payloads over
    128 KiB (JES CHANGELOG 0.2.5), and Kafka's default record limit is 1 MiB."""

    mask_min_length: int = Field(default=4, ge=1)
    """Values of secrets used through ``valueFrom: secret`` that are at least this long are
    replaced by ``***`` in the logs put into events. Shorter values would mask ordinary words
    and digits."""
