"""The Kubernetes objects of one task: its Job, and the ConfigMap of its files.

Names are deterministic, so that handling a redelivered event finds the Jobs it already
created instead of starting them again:

- Job ``job-executor-service-job-<first 24 characters of the event id>-<action index, 3
  digits>-<task index + 1, 3 digits>``, as in JES. An event id that is not made of lower-case
  letters, digits and ``-`` (Keptn's are UUIDs) is replaced by the first 24 hex digits of its
  SHA-256, so the name is always valid. Since two ids can share 24 characters, the Job's
  ``keptn.sh/event-id`` label is checked before a Job found by name is adopted.
- ConfigMap ``<job name>-files``, owned by the Job (deleted with it).

Labels are JES's (``keptn.sh/context``, ``keptn.sh/event-id``, ``keptn.sh/commitid``,
``keptn.sh/jes-action``, ``keptn.sh/jes-task``, ``keptn.sh/jes-job-confighash``,
``keptn.sh/jes-action-index``, ``keptn.sh/jes-task-index``), plus the ``managed-by`` label and
the configured extra labels (generated ones win). Label values are sanitised as JES did: runs
of characters other than ``[-a-zA-Z0-9_.]`` become ``_``, the result is cut to 63 characters
and stripped of ``-_.`` at both ends.

Files: the ConfigMap holding the configuration stores each file under a key that is its path
with ``/`` written as ``__`` (``locust/basic.py`` → ``locust__basic.py``); a ``files`` entry
names a file, or a folder (every key under ``<folder>__``). The task's files are copied into
the task's own ConfigMap and each is mounted with ``subPath`` at ``/keptn/<path>``, on top of
the writable ``emptyDir`` at ``/keptn``.

No I/O here.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from klt_task_runner.jobexecutor import config
from klt_task_runner.jobexecutor.settings import JobExecutorSettings

Body = dict[str, Any]

JOB_NAME_PREFIX = "job-executor-service-job-"
KEPTN_PATH = "/keptn"
WORK_VOLUME = "job-volume"
# NB: not "keptn-…": the dev stack's node agent rewrites "/keptn" inside paths it translates.
FILES_VOLUME = "job-files"
PATH_SEPARATOR_IN_KEYS = "__"
MIN_TTL_SECONDS = 60

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_CONTEXT = "keptn.sh/context"
LABEL_EVENT_ID = "keptn.sh/event-id"
LABEL_COMMIT_ID = "keptn.sh/commitid"
LABEL_ACTION = "keptn.sh/jes-action"
LABEL_TASK = "keptn.sh/jes-task"
LABEL_CONFIG_HASH = "keptn.sh/jes-job-confighash"
LABEL_ACTION_INDEX = "keptn.sh/jes-action-index"
LABEL_TASK_INDEX = "keptn.sh/jes-task-index"

_NAME_SAFE = re.compile(r"^[a-z0-9-]+$")
_LABEL_UNSAFE = re.compile(r"[^-a-zA-Z0-9_.]+")


class SpecError(ValueError):
    """The task cannot become a Job; the message says why (JES's wording where it had one)."""


def job_name(event_id: str, action_index: int, task_index: int) -> str:
    """The Job of task ``task_index`` (0-based) of action ``action_index`` for one event."""
    part = event_id[:24]
    if not _NAME_SAFE.match(part) or part.startswith("-"):
        part = hashlib.sha256(event_id.encode()).hexdigest()[:24]
    return f"{JOB_NAME_PREFIX}{part}-{action_index:03d}-{task_index + 1:03d}"


def files_configmap_name(job: str) -> str:
    return f"{job}-files"


def label_value(text: str) -> str:
    """``text`` made a valid label value, JES's way (may become empty)."""
    return _LABEL_UNSAFE.sub("_", text)[:63].strip("-_.")


@dataclass(frozen=True)
class TaskRef:
    """Everything that identifies one task run, for names and labels."""

    event_id: str
    keptn_context: str
    git_commit_id: str
    action_index: int
    action_name: str
    task_index: int
    task_name: str
    config_hash: str

    @property
    def job_name(self) -> str:
        return job_name(self.event_id, self.action_index, self.task_index)


def job_labels(ref: TaskRef, settings: JobExecutorSettings) -> dict[str, str]:
    generated = {
        LABEL_MANAGED_BY: settings.managed_by,
        LABEL_CONTEXT: label_value(ref.keptn_context),
        LABEL_EVENT_ID: label_value(ref.event_id),
        LABEL_ACTION: label_value(ref.action_name),
        LABEL_TASK: label_value(ref.task_name),
        LABEL_CONFIG_HASH: ref.config_hash,
        LABEL_ACTION_INDEX: str(ref.action_index),
        LABEL_TASK_INDEX: str(ref.task_index),
    }
    if ref.git_commit_id:
        generated[LABEL_COMMIT_ID] = label_value(ref.git_commit_id)
    return {**settings.job_labels, **generated}


def belongs_to(job: Body, ref: TaskRef) -> bool:
    """Whether a Job found under this task's name was created for this very event."""
    labels = (job.get("metadata") or {}).get("labels") or {}
    return bool(
        labels.get(LABEL_EVENT_ID) == label_value(ref.event_id)
        and labels.get(LABEL_CONTEXT) == label_value(ref.keptn_context)
    )


def resources(task: config.Task, settings: JobExecutorSettings) -> Body:
    """The container's requests and limits: the task's when it has a block, else defaults."""
    if task.resources is not None:
        block = task.resources
        out: Body = {}
        for part in ("limits", "requests"):
            values = getattr(block, part)
            if values is not None:
                chosen = {k: v for k, v in (("cpu", values.cpu), ("memory", values.memory)) if v}
                if chosen:
                    out[part] = chosen
        return out
    defaults = settings.default_resources
    out = {}
    limits = {"cpu": defaults.limits_cpu, "memory": defaults.limits_memory}
    requests = {"cpu": defaults.requests_cpu, "memory": defaults.requests_memory}
    if chosen := {k: v for k, v in limits.items() if v}:
        out["limits"] = chosen
    if chosen := {k: v for k, v in requests.items() if v}:
        out["requests"] = chosen
    return out


def security_context(task: config.Task, settings: JobExecutorSettings) -> config.SecurityContext:
    """The task's container security context merged over the default.

    Raises:
        SpecError: the result is privileged and privileged jobs are not allowed.
    """
    default = settings.default_security_context
    merged = task.security_context.merged_over(default) if task.security_context else default
    if merged.privileged and not settings.allow_privileged_jobs:
        raise SpecError("privileged containers are not allowed")
    return merged


def ttl_seconds(task: config.Task, settings: JobExecutorSettings) -> int:
    ttl = task.ttl_seconds_after_finished
    if ttl is None:
        ttl = settings.ttl_seconds_after_finished
    return max(ttl, MIN_TTL_SECONDS)


def _clean_path(entry: str, task_name: str) -> str:
    path = entry.strip().strip("/")
    parts = path.split("/")
    if not path or any(part in ("", ".", "..") for part in parts):
        raise SpecError(f"invalid file path {entry!r} for task {task_name}")
    return path


def path_key(path: str) -> str:
    """The ConfigMap key a file at ``path`` is stored under."""
    return path.strip("/").replace("/", PATH_SEPARATOR_IN_KEYS)


def select_files(task: config.Task, available: Mapping[str, object]) -> list[tuple[str, str]]:
    """``(path under /keptn, ConfigMap key)`` of every file the task asks for.

    An entry is a file when its key exists, else a folder: every key that starts with the
    folder's key and ``__`` (so ``helm`` takes ``helm/x`` but not ``helm-abc/x``).

    Raises:
        SpecError: an entry matches nothing (JES's message), or is not a usable path. Names
            containing ``__`` can be listed as files, not found through their folder.
    """
    chosen: dict[str, str] = {}
    for entry in task.files:
        path = _clean_path(entry, task.name)
        key = path_key(path)
        if key in available:
            chosen[path] = key
            continue
        prefix = key + PATH_SEPARATOR_IN_KEYS
        found = sorted(k for k in available if k.startswith(prefix))
        if not found:
            raise SpecError(f"could not find file or directory {entry} for task {task.name}")
        for k in found:
            decoded = k.replace(PATH_SEPARATOR_IN_KEYS, "/")
            if any(part in ("", ".", "..") for part in decoded.split("/")):
                raise SpecError(
                    f"the key {k} in folder {entry} for task {task.name} does not decode to a "
                    f"path (a name containing {PATH_SEPARATOR_IN_KEYS!r}?): list it as a file"
                )
            chosen[decoded] = k
    return sorted(chosen.items())


def files_configmap(
    ref: TaskRef,
    namespace: str,
    files: list[tuple[str, str]],
    source_data: Mapping[str, str],
    source_binary: Mapping[str, str],
    settings: JobExecutorSettings,
) -> Body:
    """The task's own ConfigMap with just its files (the owner reference is added later)."""
    data = {key: source_data[key] for _, key in files if key in source_data}
    binary = {key: source_binary[key] for _, key in files if key in source_binary}
    body: Body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": files_configmap_name(ref.job_name),
            "namespace": namespace,
            "labels": job_labels(ref, settings),
        },
        "immutable": True,
        "data": data,
    }
    if binary:
        body["binaryData"] = binary
    return body


def job(
    ref: TaskRef,
    task: config.Task,
    *,
    namespace: str,
    env: list[dict[str, Any]],
    files: list[tuple[str, str]],
    settings: JobExecutorSettings,
) -> Body:
    """The Job running ``task``.

    Raises:
        SpecError: the security context is not allowed.
    """
    name = ref.job_name
    container: Body = {
        "name": name,
        "image": task.image,
        "env": env,
        "securityContext": security_context(task, settings).to_k8s(),
        "resources": resources(task, settings),
        "volumeMounts": [
            {"name": WORK_VOLUME, "mountPath": KEPTN_PATH},
            *(
                {
                    "name": FILES_VOLUME,
                    "mountPath": f"{KEPTN_PATH}/{path}",
                    "subPath": key,
                    "readOnly": True,
                }
                for path, key in files
            ),
        ],
    }
    if task.cmd:
        container["command"] = list(task.cmd)
    if task.args:
        container["args"] = list(task.args)
    if task.working_dir:
        container["workingDir"] = task.working_dir
    if task.image_pull_policy:
        container["imagePullPolicy"] = task.image_pull_policy
    volumes: list[Body] = [
        {"name": WORK_VOLUME, "emptyDir": {"sizeLimit": settings.work_volume_size}}
    ]
    if files:
        volumes.append({"name": FILES_VOLUME, "configMap": {"name": files_configmap_name(name)}})
    pod_spec: Body = {
        "restartPolicy": "Never",
        "serviceAccountName": task.service_account or settings.default_service_account,
        "securityContext": settings.default_pod_security_context.to_k8s(),
        "containers": [container],
        "volumes": volumes,
    }
    if not task.service_account:
        # The default account gets no token at all; a task naming an account wants its
        # permissions, so the account's own automount setting decides.
        pod_spec["automountServiceAccountToken"] = False
    spec: Body = {
        "backoffLimit": 0,
        "ttlSecondsAfterFinished": ttl_seconds(task, settings),
        "template": {
            "metadata": {"labels": {LABEL_MANAGED_BY: settings.managed_by}},
            "spec": pod_spec,
        },
    }
    if settings.task_deadline_seconds > 0:
        spec["activeDeadlineSeconds"] = settings.task_deadline_seconds
    metadata: Body = {"name": name, "namespace": namespace, "labels": job_labels(ref, settings)}
    if task.annotations:
        metadata["annotations"] = dict(task.annotations)
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": spec}
