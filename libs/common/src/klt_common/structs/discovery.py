"""Workload discovery: what an annotated pod means, as Keptn derives it.

Pure functions shared by the webhook (at admission) and the app-aggregator (when it reconciles
gated pods from the cluster), so both reach the same names for the same pod. The rules are
Keptn's (lifecycle-operator's pod mutator):

- keys are read with the precedence keptn.sh annotation > keptn.sh label >
  app.kubernetes.io annotation > app.kubernetes.io label;
- a pod without a workload key inherits the keys of its parent (Deployment via its ReplicaSet,
  Argo Rollout, StatefulSet or DaemonSet); the ReplicaSet's own keys are never read;
- the version, when absent, is the image tag of the container named by ``keptn.sh/container``,
  else the FNV-32a hash of every container's name, image and env; it is lower-cased;
- names go through ``create_resource_name`` (joined with '-', leading parts shortened to fit
  253 characters, lower-cased, '_' turned into '-').

Two deliberate differences, recorded in docs/compatibility.md: comma-separated check lists are
trimmed and empty entries dropped (Keptn kept " name" and looked for a definition with a
leading space forever), and a name that still is not a valid Kubernetes name is an error with a
message, where Keptn failed later with an apiserver error.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

WORKLOAD = "keptn.sh/workload"
VERSION = "keptn.sh/version"
APP = "keptn.sh/app"
CONTAINER = "keptn.sh/container"
PRE_TASKS = "keptn.sh/pre-deployment-tasks"
POST_TASKS = "keptn.sh/post-deployment-tasks"
PRE_EVALUATIONS = "keptn.sh/pre-deployment-evaluations"
POST_EVALUATIONS = "keptn.sh/post-deployment-evaluations"
METADATA = "keptn.sh/metadata"
APP_TYPE = "keptn.sh/app-type"
GATE_REMOVED = "keptn.sh/scheduling-gate-removed"
NAMESPACE_ENABLED = "keptn.sh/lifecycle-toolkit"

K8S_WORKLOAD = "app.kubernetes.io/name"
K8S_VERSION = "app.kubernetes.io/version"
K8S_APP = "app.kubernetes.io/part-of"

SCHEDULING_GATE = "keptn-prechecks-gate"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_KEPTN = "keptn"
SINGLE_SERVICE = "single-service"

MAX_NAME_LENGTH = 253
MIN_PART_LENGTH = 80

SUPPORTED_OWNERS = ("ReplicaSet", "Deployment", "StatefulSet", "DaemonSet", "Rollout")

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")

Meta = Mapping[str, Any]


def _map(value: Any) -> Mapping[str, Any]:
    # Objects come from the apiserver, but admission bodies can be anything: a field of the
    # wrong type reads as absent rather than crashing the caller.
    return value if isinstance(value, Mapping) else {}


def _seq(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


class DiscoveryError(ValueError):
    """The pod asks for the lifecycle but its keys cannot be turned into resources.

    The message says which key is wrong and how to fix it; the webhook returns it to the user.
    """


def label_or_annotation(meta: Meta, primary: str, secondary: str = "") -> str | None:
    """Keptn's lookup: annotation, then label, for ``primary``, then the same for ``secondary``.

    Empty values count as absent.
    """
    annotations = _map(meta.get("annotations"))
    labels = _map(meta.get("labels"))
    for key in (primary, secondary):
        if not key:
            continue
        for source in (annotations, labels):
            value = source.get(key)
            if isinstance(value, str) and value:
                return value
    return None


def has_workload_key(meta: Meta) -> bool:
    return label_or_annotation(meta, WORKLOAD, K8S_WORKLOAD) is not None


def create_resource_name(
    *parts: str, max_length: int = MAX_NAME_LENGTH, min_part: int = MIN_PART_LENGTH
) -> str:
    """Join ``parts`` with '-' and shorten the leading parts until the result fits.

    Each leading part keeps at least ``min_part`` characters (halved while the parts could not
    all keep that much); the last part is never shortened. The result is lower-cased and '_'
    becomes '-', so a version like ``0.4.0_1`` gives a valid name.
    """
    names = list(parts)
    while len(names) * min_part > max_length:
        min_part //= 2
    for i in range(len(names) - 1):
        joined = "-".join(names)
        if len(joined) <= max_length:
            break
        if len(names[i]) <= min_part:
            continue
        cut = len(joined) - max_length
        names[i] = names[i][:min_part] if cut > len(names[i]) - min_part else names[i][:-cut]
    return "-".join(names).lower().replace("_", "-")


def _fnv32a(data: bytes) -> int:
    value = 0x811C9DC5
    for byte in data:
        value ^= byte
        value = (value * 0x01000193) & 0xFFFFFFFF
    return value


def _tag(image: str) -> str | None:
    parts = image.split(":")
    if len(parts) >= 2 and parts[-1] and parts[-1] != "latest":
        return parts[-1]
    return None


def calculate_version(containers: Sequence[Mapping[str, Any]], container_name: str = "") -> str:
    """The version of a pod without a version key.

    ``container_name`` (from ``keptn.sh/container``) picks the container whose image tag is the
    version; a tag that is empty or ``latest`` does not count. Otherwise the version is the
    decimal FNV-32a hash of every container's name, image and env names and values in order.

    Raises:
        DiscoveryError: ``container_name`` names no container of the pod.
    """
    seed = ""
    found = False
    for container in (c for c in _seq(containers) if isinstance(c, Mapping)):
        name = str(container.get("name", ""))
        image = str(container.get("image", ""))
        if name == container_name:
            found = True
            tag = _tag(image)
            if tag is not None:
                return tag.lower()
        seed += name + image
        for env in (e for e in _seq(container.get("env")) if isinstance(e, Mapping)):
            seed += str(env.get("name", "")) + str(env.get("value", "") or "")
    if container_name and not found:
        names = (
            ", ".join(str(c.get("name", "")) for c in _seq(containers) if isinstance(c, Mapping))
            or "none"
        )
        raise DiscoveryError(
            f"{CONTAINER} names container '{container_name}', which the pod does not have "
            f"(its containers: {names}); name one of them or remove the annotation"
        )
    return str(_fnv32a(seed.encode()))


def parse_metadata(raw: str | None) -> dict[str, str]:
    """``k1=v1,k2=v2`` → a dict; pairs not of the form k=v are dropped, as Keptn does."""
    result: dict[str, str] = {}
    for pair in (raw or "").split(","):
        key, sep, value = pair.partition("=")
        key, value = key.strip(), value.strip()
        if sep and key and "=" not in value:
            result[key] = value
    return result


def split_checks(raw: str | None) -> list[str]:
    """A comma-separated list of definition names, trimmed, without empty entries."""
    return [name.strip() for name in (raw or "").split(",") if name.strip()]


def is_valid_name(name: str) -> bool:
    return 0 < len(name) <= MAX_NAME_LENGTH and _DNS_SUBDOMAIN.match(name) is not None


def supported_owner(meta: Meta) -> Mapping[str, Any] | None:
    """The last owner reference of a kind Keptn supports, as Keptn picks it."""
    chosen = None
    for owner in _seq(meta.get("ownerReferences")):
        if isinstance(owner, Mapping) and owner.get("kind") in SUPPORTED_OWNERS:
            chosen = owner
    return chosen


@dataclass(frozen=True)
class Discovery:
    """The lifecycle identity of one pod: the Keptn objects it belongs to."""

    app: str
    """KeptnApp name."""
    workload: str
    """KeptnWorkload name: ``<app>-<workload key>``."""
    version: str
    single_service: bool
    """No app key: the app is the workload itself and is created at once."""
    owner: Mapping[str, Any]
    pre_deployment_tasks: list[str] = field(default_factory=list)
    post_deployment_tasks: list[str] = field(default_factory=list)
    pre_deployment_evaluations: list[str] = field(default_factory=list)
    post_deployment_evaluations: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    """Annotations the pod should carry (keys copied from its parent, the inferred version,
    the app of a single-service workload), so later readers see the same identity."""

    @property
    def workload_version(self) -> str:
        """KeptnWorkloadVersion name: ``<app>-<workload>-<version>``."""
        return create_resource_name(self.workload, self.version)


def discover(pod: Meta, parent: Meta | None = None) -> Discovery | None:
    """What ``pod`` means for the lifecycle, or None when it is not annotated.

    Args:
        pod: the pod object (``metadata`` and ``spec``).
        parent: the metadata of the pod's Deployment, Rollout, StatefulSet or DaemonSet, used
            only when the pod itself has no workload key.

    Raises:
        DiscoveryError: the pod is annotated but its keys give no valid resource names.
    """
    meta = _map(pod.get("metadata"))
    parent = _map(parent) if parent is not None else None
    owner = supported_owner(meta)
    if owner is None:
        return None
    copied: dict[str, str] = {}
    source = meta
    if not has_workload_key(meta):
        if parent is None or not has_workload_key(parent):
            return None
        source = parent
    workload_key = label_or_annotation(source, WORKLOAD, K8S_WORKLOAD)
    assert workload_key is not None
    app_key = label_or_annotation(source, APP, K8S_APP)
    version = label_or_annotation(source, VERSION, K8S_VERSION)
    container = label_or_annotation(meta, CONTAINER) or ""
    if version is None:
        containers = _seq(_map(pod.get("spec")).get("containers"))
        version = calculate_version(containers, container)
        copied[VERSION] = version
    version = version.lower()
    checks = {
        key: label_or_annotation(source, key)
        for key in (PRE_TASKS, POST_TASKS, PRE_EVALUATIONS, POST_EVALUATIONS, METADATA)
    }
    if source is not meta:
        copied[WORKLOAD] = workload_key
        if app_key:
            copied[APP] = app_key
        copied.update({k: v for k, v in checks.items() if v and k != METADATA})
    # The webhook writes keptn.sh/app onto a single-service pod (as Keptn does); the app-type
    # annotation it adds beside it keeps a later reader from mistaking the pod for part of a
    # multi-service app.
    single = app_key is None or _map(meta.get("annotations")).get(APP_TYPE) == SINGLE_SERVICE
    app = create_resource_name(app_key or workload_key)
    if app_key is None:
        copied[APP] = app
        copied[APP_TYPE] = SINGLE_SERVICE
    workload = create_resource_name(app, workload_key)
    discovery = Discovery(
        app=app,
        workload=workload,
        version=version,
        single_service=single,
        owner=owner,
        pre_deployment_tasks=split_checks(checks[PRE_TASKS]),
        post_deployment_tasks=split_checks(checks[POST_TASKS]),
        pre_deployment_evaluations=split_checks(checks[PRE_EVALUATIONS]),
        post_deployment_evaluations=split_checks(checks[POST_EVALUATIONS]),
        metadata=parse_metadata(checks[METADATA]),
        annotations=copied,
    )
    for what, name in (
        ("app", app),
        ("workload", workload),
        ("workload version", discovery.workload_version),
    ):
        if not is_valid_name(name):
            raise DiscoveryError(
                f"the {what} name '{name[:300]}' derived from the pod's keptn.sh / "
                f"app.kubernetes.io keys is not a valid Kubernetes name (lower-case letters, "
                f"digits, '-' and '.', at most {MAX_NAME_LENGTH} characters); "
                f"fix {APP}, {WORKLOAD} or {VERSION}"
            )
    return discovery


def generation_hash(generation: int) -> str:
    """The suffix of a KeptnAppVersion name: first 4 bytes of sha256(str(generation)), hex."""
    return hashlib.sha256(str(generation).encode()).hexdigest()[:8]


def app_version_name(app: str, version: str, generation: int) -> str:
    """KeptnAppVersion name: ``<app>-<version>-<generation hash>``."""
    return create_resource_name(app, version, generation_hash(generation))


def automatic_app_version(workloads: Sequence[tuple[str, str]]) -> str:
    """Version of an automatically created KeptnApp from its (KeptnWorkload name, version) pairs.

    One workload: its version. Several: the first 10 hex characters of the sha256 of every
    ``<name>-<version>`` concatenated in name order.
    """
    if len(workloads) == 1:
        return workloads[0][1]
    joined = "".join(f"{name}-{version}" for name, version in sorted(workloads))
    return hashlib.sha256(joined.encode()).hexdigest()[:10]
