"""From a KeptnTask and its KeptnTaskDefinition to a batch/v1 Job. Pure: no I/O.

This module holds Keptn's rules for what a task's Job looks like, so that they can be tested
without a cluster:

- **Runtime.** Exactly one of ``deno``, ``python`` or ``container``. The deno and python
  runtimes run the function runner image with the code mounted at ``/var/data/function.ts`` or
  ``/var/data/function.py`` (a ConfigMap's ``code`` key) or fetched from an ``httpRef`` URL; a
  ConfigMap wins over a URL. A ``container`` is used as written, plus ``KEPTN_CONTEXT``.
- **Code sources.** ``inline`` code lives in the ConfigMap ``keptnfn-<definition[:245]>`` that
  the task-runner keeps next to the definition; ``configMapRef`` names a ConfigMap; ``httpRef`` a
  URL; ``functionRef`` another definition whose code (and runtime image) is used, with this
  definition's parameters, secret and arguments taking precedence over the referenced one's.
- **Environment.** ``DATA`` (JSON of the merged parameters, only when there are any; a key of
  the task beats the definition's, which beats the referenced definition's), ``KEPTN_CONTEXT``
  (JSON of ``spec.context`` in Keptn's key order), ``CMD_ARGS`` (always set), ``SECURE_DATA``
  (a ``secretKeyRef`` to the key ``SECURE_DATA``; the value itself never passes through klt) and
  ``SCRIPT`` (the mount path or the URL).
- **Job.** ``restartPolicy: OnFailure``; ``backoffLimit`` = the task's retries;
  ``activeDeadlineSeconds`` = its timeout; ``ttlSecondsAfterFinished``, the service account,
  token automount and image pull secrets from the definition; the task's labels on Job and pod,
  its annotations on both plus Keptn's ``keptn.sh/*`` annotations on the Job; owned by the task.

klt's additions: the Job's name is derived from the task (name and uid) instead of random, and
Job and pod carry the label ``klt.dev/task-uid``, so a Job is found again after any restart and
never created twice. When the code lives in another namespace than the task (a definition found
in the klt namespace), the code is copied into a ConfigMap in the task's namespace, since a pod
can only mount ConfigMaps of its own namespace.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from klt_common.structs.api import lifecycle, parse_duration

Body = dict[str, Any]

LABEL_TASK_UID = "klt.dev/task-uid"
"""On Jobs and their pods: the uid of the KeptnTask they run."""

LABEL_RUNNER_CLASS = "klt.dev/runner-class"
"""On KeptnTasks (and so on their Jobs and pods): which installation runs them."""

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "klt-task-runner"
"""Value of ``app.kubernetes.io/managed-by`` on the ConfigMaps the task-runner writes."""

RUNNER_CONTAINER = "keptn-function-runner"
FUNCTION_VOLUME = "function-mount"
CODE_KEY = "code"
DENO_MOUNT_PATH = "/var/data/function.ts"
PYTHON_MOUNT_PATH = "/var/data/function.py"
FUNCTION_CONFIGMAP_PREFIX = "keptnfn-"

_MAX_FUNCTION_CHAIN = 10


class Runtime(StrEnum):
    """Which runner a definition uses."""

    DENO = "deno"
    PYTHON = "python"
    CONTAINER = "container"


class DefinitionError(Exception):
    """The definition cannot be run as written; the task fails with this reason and message."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class DefinitionNotFound(Exception):
    """A definition the task needs (its own or one named by ``functionRef``) does not exist."""

    def __init__(self, name: str) -> None:
        super().__init__(f"could not find KeptnTaskDefinition: {name}")
        self.name = name


Lookup = Callable[[str], lifecycle.KeptnTaskDefinition | None]
"""Finds a definition by name for the task at hand (its namespace first, then klt's)."""


def runtime_of(definition: lifecycle.KeptnTaskDefinition) -> Runtime:
    """The definition's runtime; exactly one must be set (Keptn's admission rule)."""
    spec = definition.spec
    present = [
        runtime
        for runtime, value in (
            (Runtime.CONTAINER, spec.container),
            (Runtime.PYTHON, spec.python),
            (Runtime.DENO, spec.deno),
        )
        if value is not None
    ]
    name = definition.metadata.name
    if not present:
        raise DefinitionError(
            "InvalidTaskDefinition",
            f"KeptnTaskDefinition {name}: Forbidden! Either Container, Python, or Deno field "
            "must be defined",
        )
    if len(present) > 1:
        raise DefinitionError(
            "InvalidTaskDefinition",
            f"KeptnTaskDefinition {name}: Forbidden! Only one of Container, Python, or Deno "
            f"field can be defined (found {', '.join(present)})",
        )
    return present[0]


def function_configmap_name(definition_name: str) -> str:
    """Name of the ConfigMap holding a definition's inline code (Keptn's naming)."""
    return FUNCTION_CONFIGMAP_PREFIX + definition_name[:245]


def job_name(task_name: str, task_uid: str) -> str:
    """The task's Job name: readable, a valid DNS label of at most 63 characters (the Job
    controller puts it into a pod label), and unique per task uid, so a task recreated under the
    same name gets a new Job while the same task always finds its own."""
    digest = hashlib.sha256(task_uid.encode()).hexdigest()[:8]
    stem = re.sub(r"[^a-z0-9-]+", "-", task_name.lower())[:54].strip("-") or "task"
    return f"{stem}-{digest}"


def go_json(value: Any) -> str:
    """JSON as Go's ``json.Marshal`` writes it: compact, map keys sorted by the caller, and
    ``<``, ``>``, ``&``, U+2028, U+2029 escaped. Tasks that compare KEPTN_CONTEXT or DATA
    byte for byte with what Keptn produced see the same text."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def keptn_context(task: lifecycle.KeptnTask) -> str:
    """``KEPTN_CONTEXT``: the task's context in Keptn's key order; every key but ``metadata`` is
    always present (an empty string when unset), ``metadata`` only when non-empty."""
    context = task.spec.context or lifecycle.TaskContext()
    value: dict[str, Any] = {
        "workloadName": context.workload_name or "",
        "appName": context.app_name or "",
        "appVersion": context.app_version or "",
        "workloadVersion": context.workload_version or "",
        "taskType": context.task_type or "",
        "objectType": context.object_type or "",
    }
    if context.metadata:
        value["metadata"] = dict(sorted(context.metadata.items()))
    return go_json(value)


@dataclass(frozen=True)
class CodeSource:
    """Where a function's code is, as the definition that holds it says."""

    definition: lifecycle.KeptnTaskDefinition
    """The definition whose code runs (the task's own, or one reached through functionRef)."""

    runtime: Runtime
    inline: str | None = None
    config_map: str | None = None
    """ConfigMap with the code under ``code``, in the holding definition's namespace."""

    url: str | None = None

    @property
    def namespace(self) -> str:
        return self.definition.metadata.namespace or ""


@dataclass(frozen=True)
class Function:
    """A deno or python function, resolved through its functionRef chain."""

    code: CodeSource
    parameters: dict[str, str]
    secure_secret: str | None
    cmd_args: str


def _runtime_spec(
    definition: lifecycle.KeptnTaskDefinition,
) -> tuple[Runtime, lifecycle.RuntimeSpec]:
    runtime = runtime_of(definition)
    if runtime is Runtime.CONTAINER:
        raise DefinitionError(
            "InvalidTaskDefinition",
            f"functionRef names KeptnTaskDefinition {definition.metadata.name}, which is a "
            "container, not a deno or python function",
        )
    spec = definition.spec.deno if runtime is Runtime.DENO else definition.spec.python
    assert spec is not None
    return runtime, spec


def _own_code(
    definition: lifecycle.KeptnTaskDefinition, runtime: Runtime, spec: lifecycle.RuntimeSpec
) -> CodeSource | None:
    name = definition.metadata.name or ""
    if spec.inline is not None and spec.inline.code:
        return CodeSource(
            definition, runtime, inline=spec.inline.code, config_map=function_configmap_name(name)
        )
    if spec.config_map_ref is not None and spec.config_map_ref.name:
        return CodeSource(definition, runtime, config_map=spec.config_map_ref.name)
    if spec.http_ref is not None and spec.http_ref.url:
        return CodeSource(definition, runtime, url=spec.http_ref.url)
    return None


def resolve_function(definition: lifecycle.KeptnTaskDefinition, lookup: Lookup) -> Function:
    """Follow ``functionRef`` to the definition holding the code, merging on the way.

    Parameters merge key by key, the nearer definition winning; the secret and the command-line
    arguments come from the nearest definition that sets them; the code (and with it the runtime
    image) from the first definition that has any.

    Raises:
        DefinitionNotFound: a definition named by ``functionRef`` does not exist.
        DefinitionError: no code anywhere, a cycle, or a reference to a container definition.
    """
    parameters: dict[str, str] = {}
    secret: str | None = None
    cmd_args: str | None = None
    seen: list[str] = []
    current = definition
    while True:
        name = current.metadata.name or ""
        if name in seen or len(seen) >= _MAX_FUNCTION_CHAIN:
            raise DefinitionError(
                "InvalidTaskDefinition",
                f"functionRef chain {' -> '.join([*seen, name])} does not end in code",
            )
        seen.append(name)
        runtime, spec = _runtime_spec(current)
        if spec.parameters is not None and spec.parameters.map:
            for key, value in spec.parameters.map.items():
                parameters.setdefault(key, value)
        if secret is None and spec.secure_parameters is not None and spec.secure_parameters.secret:
            secret = spec.secure_parameters.secret
        if cmd_args is None and spec.cmd_parameters:
            cmd_args = spec.cmd_parameters
        code = _own_code(current, runtime, spec)
        if code is not None:
            return Function(code, parameters, secret, cmd_args or "")
        ref = spec.function_ref.name if spec.function_ref is not None else None
        if not ref:
            raise DefinitionError(
                "InvalidTaskDefinition",
                f"KeptnTaskDefinition {name} has no code: set one of inline, httpRef, "
                "configMapRef or functionRef",
            )
        parent = lookup(ref)
        if parent is None:
            raise DefinitionNotFound(ref)
        current = parent


@dataclass(frozen=True)
class CodeCopy:
    """Code that must be copied into the task's namespace before the Job can mount it."""

    name: str
    """The ConfigMap to write in the task's namespace (named after the Job)."""

    inline: str | None = None
    """The code itself, when the definition has it inline."""

    source_namespace: str = ""
    source_config_map: str | None = None
    """Otherwise the ConfigMap (in another namespace) whose ``code`` key to copy."""


@dataclass(frozen=True)
class JobPlan:
    """Everything needed to start a task: the Job, and what must exist before it."""

    job: Body
    runtime: Runtime
    definition: lifecycle.KeptnTaskDefinition
    function: Function | None = None
    code_copy: CodeCopy | None = None
    inline_config_map: bool = False
    """True when the Job mounts the holding definition's own ``keptnfn-*`` ConfigMap, which the
    task-runner must make sure exists (and is current) before creating the Job."""

    secret: str | None = field(default=None)
    """The Secret whose ``SECURE_DATA`` the Job reads, if any."""


@dataclass(frozen=True)
class Images:
    """The function runner images, from the settings."""

    deno: str
    python: str


def _task_annotations(task: lifecycle.KeptnTask) -> dict[str, str]:
    context = task.spec.context or lifecycle.TaskContext()
    ours: dict[str, str] = {"keptn.sh/app": context.app_name or ""}
    if context.workload_name:
        ours["keptn.sh/workload"] = context.workload_name
        ours["keptn.sh/version"] = context.workload_version or ""
    else:
        ours["keptn.sh/version"] = context.app_version or ""
    ours["keptn.sh/task-name"] = task.metadata.name or ""
    return {**(task.metadata.annotations or {}), **ours}


def _deadline_seconds(timeout: str) -> int | None:
    try:
        seconds = int(parse_duration(timeout).total_seconds())
    except ValueError:
        return None
    # Kubernetes rejects a non-positive deadline; "0" therefore means no deadline at all.
    return seconds if seconds > 0 else None


def _runtime_container(
    task: lifecycle.KeptnTask, function: Function, images: Images, mount_config_map: str | None
) -> tuple[Body, list[Body]]:
    code = function.code
    image = images.python if code.runtime is Runtime.PYTHON else images.deno
    mount_path = PYTHON_MOUNT_PATH if code.runtime is Runtime.PYTHON else DENO_MOUNT_PATH
    parameters = dict(function.parameters)
    if task.spec.parameters is not None and task.spec.parameters.map:
        parameters = {**parameters, **task.spec.parameters.map}
    secret = function.secure_secret
    if task.spec.secure_parameters is not None and task.spec.secure_parameters.secret:
        secret = task.spec.secure_parameters.secret
    env: list[Body] = []
    if parameters:
        env.append({"name": "DATA", "value": go_json(dict(sorted(parameters.items())))})
    env.append({"name": "KEPTN_CONTEXT", "value": keptn_context(task)})
    env.append({"name": "CMD_ARGS", "value": function.cmd_args})
    if secret:
        env.append(
            {
                "name": "SECURE_DATA",
                "valueFrom": {"secretKeyRef": {"name": secret, "key": "SECURE_DATA"}},
            }
        )
    container: Body = {
        "name": RUNNER_CONTAINER,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
    }
    volumes: list[Body] = []
    if mount_config_map is not None:
        env.append({"name": "SCRIPT", "value": mount_path})
        container["volumeMounts"] = [
            {
                "name": FUNCTION_VOLUME,
                "readOnly": True,
                "mountPath": mount_path,
                "subPath": CODE_KEY,
            }
        ]
        volumes.append({"name": FUNCTION_VOLUME, "configMap": {"name": mount_config_map}})
    else:
        env.append({"name": "SCRIPT", "value": code.url or ""})
    container["env"] = env
    return container, volumes


def _user_container(task: lifecycle.KeptnTask, spec: Mapping[str, Any]) -> tuple[Body, list[Body]]:
    container: Body = copy.deepcopy(dict(spec))
    env = [dict(item) for item in container.get("env") or []]
    context = keptn_context(task)
    for item in env:
        if item.get("name") == "KEPTN_CONTEXT":
            item.pop("valueFrom", None)
            item["value"] = context
            break
    else:
        env.append({"name": "KEPTN_CONTEXT", "value": context})
    container["env"] = env
    volumes: list[Body] = []
    mounts = container.get("volumeMounts") or []
    if mounts:
        limits = (container.get("resources") or {}).get("limits") or {}
        volumes.append(
            {
                "name": mounts[0]["name"],
                "emptyDir": {"medium": "Memory", "sizeLimit": limits.get("memory", "1Gi")},
            }
        )
    return container, volumes


def plan_job(
    task: lifecycle.KeptnTask,
    definition: lifecycle.KeptnTaskDefinition,
    lookup: Lookup,
    images: Images,
) -> JobPlan:
    """The Job for ``task`` run by ``definition`` (see the module docstring for the rules).

    Raises:
        DefinitionNotFound: a definition named by ``functionRef`` does not exist (yet).
        DefinitionError: the definition cannot be run (the task fails).
    """
    meta = task.metadata
    namespace = meta.namespace or ""
    name = job_name(meta.name or "", meta.uid or "")
    runtime = runtime_of(definition)
    function: Function | None = None
    code_copy: CodeCopy | None = None
    inline_config_map = False
    if runtime is Runtime.CONTAINER:
        assert definition.spec.container is not None
        container, volumes = _user_container(task, definition.spec.container)
        secret = None
    else:
        function = resolve_function(definition, lookup)
        code = function.code
        mount: str | None = None
        if code.config_map is not None:
            if code.namespace == namespace:
                mount = code.config_map
                inline_config_map = code.inline is not None
            else:
                mount = name
                code_copy = CodeCopy(
                    name=name,
                    inline=code.inline,
                    source_namespace=code.namespace,
                    source_config_map=None if code.inline is not None else code.config_map,
                )
        container, volumes = _runtime_container(task, function, images, mount)
        secret = next(
            (
                e["valueFrom"]["secretKeyRef"]["name"]
                for e in container["env"]
                if e["name"] == "SECURE_DATA"
            ),
            None,
        )
    labels = {**(meta.labels or {}), LABEL_TASK_UID: meta.uid or ""}
    pod_spec: Body = {"restartPolicy": "OnFailure", "containers": [container]}
    if volumes:
        pod_spec["volumes"] = volumes
    dspec = definition.spec
    if dspec.service_account is not None and dspec.service_account.name:
        pod_spec["serviceAccountName"] = dspec.service_account.name
    if dspec.automount_service_account_token is not None:
        pod_spec["automountServiceAccountToken"] = dspec.automount_service_account_token.type
    if dspec.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [
            {"name": ref.name} for ref in dspec.image_pull_secrets if ref.name
        ]
    job_spec: Body = {
        "backoffLimit": max(task.spec.retries, 0),
        "ttlSecondsAfterFinished": dspec.ttl_seconds_after_finished,
        "template": {
            "metadata": {"labels": labels, "annotations": dict(meta.annotations or {})},
            "spec": pod_spec,
        },
    }
    deadline = _deadline_seconds(task.spec.timeout)
    if deadline is not None:
        job_spec["activeDeadlineSeconds"] = deadline
    job: Body = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": _task_annotations(task),
            "ownerReferences": [
                {
                    "apiVersion": lifecycle.API_VERSION,
                    "kind": "KeptnTask",
                    "name": meta.name,
                    "uid": meta.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": job_spec,
    }
    return JobPlan(
        job=job,
        runtime=runtime,
        definition=definition,
        function=function,
        code_copy=code_copy,
        inline_config_map=inline_config_map,
        secret=secret,
    )
