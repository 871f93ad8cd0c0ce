"""What the aggregator writes, as pure functions of what it read.

Nothing here performs I/O, so every rule Keptn's controllers applied (names, specs, the
version of an automatic app, the discovery deadline, which KeptnConfig counts) is unit-tested
without a cluster. Objects stay plain dicts in their wire (camelCase) form: they are read from
and written to the apiserver as such, and comparing dicts is what "changed?" means there.

The Keptn rules, by object:

- **KeptnWorkload** ``<app>-<workload>``: spec from the pod's keys (app, version, the owner as
  ``resourceReference``, the four check lists, metadata); ``ownerReferences`` = the pod's owner.
  Rewritten only when the spec or the owners differ.
- **KeptnWorkloadVersion** ``<workload>-<version>``: the workload's spec plus ``workloadName``
  and ``previousVersion`` (the workload's ``status.currentVersion`` when it differs); owned by
  the workload.
- **KeptnApp** (automatic): label ``app.kubernetes.io/managed-by: keptn``, workloads = the
  KeptnWorkloads whose ``spec.app`` names it (names without the ``<app>-`` prefix), version =
  the single workload's version or a hash over all of them.
- **KeptnAppVersion** ``<app>-<version>-<hash(generation)>``: the app's spec merged with the
  same-named KeptnAppContext; owned by the app.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pydantic

from klt_common.structs import discovery as disc
from klt_common.structs import events
from klt_common.structs.api import KeptnAppContext, KeptnState

Body = dict[str, Any]

CHECK_KEYS = (
    "preDeploymentTasks",
    "postDeploymentTasks",
    "preDeploymentEvaluations",
    "postDeploymentEvaluations",
)
"""The four check lists a KeptnWorkload (and its versions) carry."""

WORKLOAD_SPEC_KEYS = ("app", "version", *CHECK_KEYS, "resourceReference", "metadata")
"""The KeptnWorkload spec fields; a KeptnWorkloadVersion spec has these and more."""

CONTEXT_KEYS = (*CHECK_KEYS, "promotionTasks", "metadata", "spanLinks")
"""The KeptnAppContext spec fields copied into a new KeptnAppVersion."""

DEPRECATED_STATUS_KEYS = (
    "preDeploymentStatus",
    "preDeploymentEvaluationStatus",
    "workloadOverallStatus",
    "postDeploymentStatus",
    "postDeploymentEvaluationStatus",
    "promotionStatus",
    "status",
)
"""What Keptn sets to Deprecated on an app version superseded by a revision bump."""

_EVENT_ID_NAMESPACE = uuid.UUID("5e0c3f3e-6f1a-4b7e-9a51-8f3b6a2d4c10")


class BadInput(ValueError):
    """A user's object cannot be used as it is; the message says which and why."""


# --- identity --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Owner:
    """The workload controller a KeptnWorkload stands for (the pod's owner)."""

    api_version: str
    kind: str
    name: str
    uid: str


@dataclass(frozen=True)
class WorkloadIdentity:
    """Everything the aggregator needs to know about one admitted pod's workload.

    Built from a ``PodAdmitted`` event or, when that event was lost, from the gated pod itself
    through the same discovery rules; both paths then run the same code.
    """

    namespace: str
    app: str
    workload: str
    """The KeptnWorkload name, ``<app>-<workload key>``."""
    version: str
    owner: Owner
    single_service: bool
    pre_deployment_tasks: tuple[str, ...] = ()
    post_deployment_tasks: tuple[str, ...] = ()
    pre_deployment_evaluations: tuple[str, ...] = ()
    post_deployment_evaluations: tuple[str, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def workload_version(self) -> str:
        return disc.create_resource_name(self.workload, self.version)

    @property
    def short_name(self) -> str:
        """The workload's name inside its app (``spec.workloads[].name``)."""
        return strip_app_prefix(self.workload, self.app)

    @classmethod
    def from_event(cls, event: events.PodAdmitted) -> WorkloadIdentity:
        return cls(
            namespace=event.namespace,
            app=event.app,
            workload=event.workload,
            version=event.version,
            owner=Owner(
                api_version=event.owner.api_version,
                kind=event.owner.kind,
                name=event.owner.name,
                uid=event.owner.uid,
            ),
            single_service=event.app_type_single_service,
            pre_deployment_tasks=event.pre_deployment_tasks,
            post_deployment_tasks=event.post_deployment_tasks,
            pre_deployment_evaluations=event.pre_deployment_evaluations,
            post_deployment_evaluations=event.post_deployment_evaluations,
            metadata=dict(event.metadata),
        )

    @classmethod
    def from_discovery(cls, namespace: str, found: disc.Discovery) -> WorkloadIdentity:
        owner = found.owner
        return cls(
            namespace=namespace,
            app=found.app,
            workload=found.workload,
            version=found.version,
            owner=Owner(
                api_version=str(owner.get("apiVersion", "")),
                kind=str(owner.get("kind", "")),
                name=str(owner.get("name", "")),
                uid=str(owner.get("uid", "")),
            ),
            single_service=found.single_service,
            pre_deployment_tasks=tuple(found.pre_deployment_tasks),
            post_deployment_tasks=tuple(found.post_deployment_tasks),
            pre_deployment_evaluations=tuple(found.pre_deployment_evaluations),
            post_deployment_evaluations=tuple(found.post_deployment_evaluations),
            metadata=dict(found.metadata),
        )


def strip_app_prefix(workload: str, app: str) -> str:
    prefix = f"{app}-"
    return workload[len(prefix) :] if workload.startswith(prefix) else workload


# --- small accessors ---------------------------------------------------------------------------


def meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    value = obj.get("metadata")
    return value if isinstance(value, Mapping) else {}


def spec(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    value = obj.get("spec")
    return value if isinstance(value, Mapping) else {}


def status(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    value = obj.get("status")
    return value if isinstance(value, Mapping) else {}


def generation(obj: Mapping[str, Any]) -> int:
    return int(meta(obj).get("generation") or 1)


def parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def is_managed(app: Mapping[str, Any]) -> bool:
    """True for an app the aggregator created (and may rewrite); False for a user's own."""
    labels = meta(app).get("labels") or {}
    # Keptn also accepted the label value "klt", written by its earliest releases.
    return labels.get(disc.MANAGED_BY_LABEL) in (disc.MANAGED_BY_KEPTN, "klt")


def _compact(value: Mapping[str, Any]) -> Body:
    """Drop absent, empty and None entries, so that ``[]``, ``{}`` and a missing key compare
    equal (the apiserver keeps what it is sent, and Keptn's Go code omitted empty fields)."""
    return {k: v for k, v in value.items() if v not in (None, "", [], {})}


# --- KeptnWorkload ---------------------------------------------------------------------------


def workload_spec(identity: WorkloadIdentity) -> Body:
    body: Body = {
        "app": identity.app,
        "version": identity.version,
        "preDeploymentTasks": list(identity.pre_deployment_tasks),
        "postDeploymentTasks": list(identity.post_deployment_tasks),
        "preDeploymentEvaluations": list(identity.pre_deployment_evaluations),
        "postDeploymentEvaluations": list(identity.post_deployment_evaluations),
        "resourceReference": {
            "uid": identity.owner.uid,
            "kind": identity.owner.kind,
            "name": identity.owner.name,
        },
        "metadata": dict(identity.metadata),
    }
    return _compact(body)


def owner_reference(owner: Owner) -> Body:
    """An owner reference to the pod's workload controller: garbage collection removes the
    KeptnWorkload with it. Not a controller reference: the controller is the pod's."""
    return {
        "apiVersion": owner.api_version,
        "kind": owner.kind,
        "name": owner.name,
        "uid": owner.uid,
    }


def controller_reference(obj: Mapping[str, Any]) -> Body:
    """A controller owner reference to ``obj`` (what controller-runtime's
    ``SetControllerReference`` writes)."""
    m = meta(obj)
    return {
        "apiVersion": str(obj.get("apiVersion", "")),
        "kind": str(obj.get("kind", "")),
        "name": str(m.get("name", "")),
        "uid": str(m.get("uid", "")),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _owner_keys(refs: Iterable[Mapping[str, Any]]) -> list[tuple[str, str, str, str]]:
    return [
        (
            str(r.get("apiVersion", "")),
            str(r.get("kind", "")),
            str(r.get("name", "")),
            str(r.get("uid", "")),
        )
        for r in refs
    ]


def workload_body(identity: WorkloadIdentity) -> Body:
    return {
        "apiVersion": "lifecycle.keptn.sh/v1",
        "kind": "KeptnWorkload",
        "metadata": {
            "name": identity.workload,
            "namespace": identity.namespace,
            "ownerReferences": [owner_reference(identity.owner)],
        },
        "spec": workload_spec(identity),
    }


def workload_differs(existing: Mapping[str, Any], identity: WorkloadIdentity) -> bool:
    """Keptn's "spec or owners differ" test for an existing KeptnWorkload."""
    current_spec = _compact({k: spec(existing).get(k) for k in WORKLOAD_SPEC_KEYS})
    if current_spec != workload_spec(identity):
        return True
    owners = meta(existing).get("ownerReferences") or []
    return _owner_keys(owners) != _owner_keys([owner_reference(identity.owner)])


def apply_workload(existing: Body, identity: WorkloadIdentity) -> Body:
    """``existing`` with the identity's spec and owners (other fields kept)."""
    existing["spec"] = workload_spec(identity)
    existing.setdefault("metadata", {})["ownerReferences"] = [owner_reference(identity.owner)]
    return existing


# --- KeptnWorkloadVersion --------------------------------------------------------------------


def workload_version_name(workload: Mapping[str, Any]) -> str:
    return disc.create_resource_name(str(meta(workload)["name"]), str(spec(workload)["version"]))


def previous_version(obj: Mapping[str, Any]) -> str | None:
    """``status.currentVersion`` when it differs from ``spec.version`` (Keptn's rule for
    ``previousVersion``), else None."""
    current = status(obj).get("currentVersion")
    if current and current != spec(obj).get("version"):
        return str(current)
    return None


def workload_version_body(workload: Mapping[str, Any]) -> Body:
    wl_spec = _compact({k: spec(workload).get(k) for k in WORKLOAD_SPEC_KEYS})
    body_spec: Body = {**wl_spec, "workloadName": str(meta(workload)["name"])}
    previous = previous_version(workload)
    if previous:
        body_spec["previousVersion"] = previous
    return {
        "apiVersion": "lifecycle.keptn.sh/v1",
        "kind": "KeptnWorkloadVersion",
        "metadata": {
            "name": workload_version_name(workload),
            "namespace": str(meta(workload).get("namespace", "")),
            "ownerReferences": [controller_reference(workload)],
        },
        "spec": body_spec,
    }


def workload_version_differs(kwv: Mapping[str, Any], workload: Mapping[str, Any]) -> bool:
    """Whether the workload's spec part of an existing version differs from the workload's."""
    ours = _compact({k: spec(kwv).get(k) for k in WORKLOAD_SPEC_KEYS})
    theirs = _compact({k: spec(workload).get(k) for k in WORKLOAD_SPEC_KEYS})
    return ours != theirs


def apply_workload_spec(kwv: Body, workload: Mapping[str, Any]) -> Body:
    """Copy the workload's spec into an existing version; its own fields (``workloadName``,
    ``previousVersion``, ``traceId``) are kept."""
    new_spec = {k: v for k, v in spec(kwv).items() if k not in WORKLOAD_SPEC_KEYS}
    new_spec.update(_compact({k: spec(workload).get(k) for k in WORKLOAD_SPEC_KEYS}))
    kwv["spec"] = new_spec
    return kwv


# --- KeptnAppCreationRequest and the discovery window ----------------------------------------


def creation_request_body(identity: WorkloadIdentity, trace_carrier: Mapping[str, str]) -> Body:
    annotations = dict(trace_carrier)
    if identity.single_service:
        annotations[disc.APP_TYPE] = disc.SINGLE_SERVICE
    metadata: Body = {"name": identity.app, "namespace": identity.namespace}
    if annotations:
        metadata["annotations"] = annotations
    return {
        "apiVersion": "lifecycle.keptn.sh/v1",
        "kind": "KeptnAppCreationRequest",
        "metadata": metadata,
        "spec": {"appName": identity.app},
    }


def is_single_service(request: Mapping[str, Any]) -> bool:
    annotations = meta(request).get("annotations") or {}
    return annotations.get(disc.APP_TYPE) == disc.SINGLE_SERVICE


def creation_deadline(
    created: datetime, *, single_service: bool, user_owned_app: bool, timeout_seconds: float
) -> datetime:
    """When a KeptnAppCreationRequest is due: at once for a single-service app or when a user
    owns the app (the request is then only deleted), else ``created + timeout``.

    Derived from the request's ``creationTimestamp`` only, so every replica, and a restarted
    aggregator, computes the same instant.
    """
    if single_service or user_owned_app:
        return created
    return created + timedelta(seconds=timeout_seconds)


def _resource_version(obj: Mapping[str, Any]) -> int:
    raw = str(meta(obj).get("resourceVersion", ""))
    return int(raw) if raw.isdigit() else -1


def creation_request_timeout(
    configs: Iterable[Mapping[str, Any]], *, name: str | None, default: float
) -> float:
    """The discovery window from the KeptnConfigs: the last one written wins (the highest
    resourceVersion, which is the apiserver's write order), optionally only those named
    ``name``. Without a usable value, ``default``."""
    candidates = [c for c in configs if name is None or meta(c).get("name") == name]
    for config in sorted(candidates, key=_resource_version, reverse=True):
        value = spec(config).get("keptnAppCreationRequestTimeoutSeconds")
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
            return float(value)
    return default


# --- KeptnApp --------------------------------------------------------------------------------


def app_workloads(app: str, workloads: Iterable[Mapping[str, Any]]) -> list[Body]:
    """``spec.workloads`` of an automatic app: its KeptnWorkloads by name (without the
    ``<app>-`` prefix) and version, sorted by name."""
    refs = [
        {"name": strip_app_prefix(str(meta(w)["name"]), app), "version": str(spec(w)["version"])}
        for w in workloads
    ]
    return sorted(refs, key=lambda r: r["name"])


def app_version_rule(workloads: Iterable[Mapping[str, Any]]) -> str:
    """Version of an automatic app: the single workload's version, or the first 10 hex
    characters of sha256 over ``<KeptnWorkload name>-<version>`` in name order."""
    return disc.automatic_app_version(
        [(str(meta(w)["name"]), str(spec(w)["version"])) for w in workloads]
    )


def app_body(request: Mapping[str, Any], workloads: Sequence[Mapping[str, Any]]) -> Body:
    """A new automatic KeptnApp for ``request``; it carries the request's annotations (the
    trace context and the app type), as Keptn's did."""
    name = str(spec(request).get("appName") or meta(request)["name"])
    metadata: Body = {
        "name": name,
        "namespace": str(meta(request).get("namespace", "")),
        "labels": {disc.MANAGED_BY_LABEL: disc.MANAGED_BY_KEPTN},
    }
    annotations = dict(meta(request).get("annotations") or {})
    if annotations:
        metadata["annotations"] = annotations
    return {
        "apiVersion": "lifecycle.keptn.sh/v1",
        "kind": "KeptnApp",
        "metadata": metadata,
        "spec": {
            "version": app_version_rule(workloads),
            "workloads": app_workloads(name, workloads),
        },
    }


def _ref_set(refs: Iterable[Mapping[str, Any]]) -> set[tuple[str, str]]:
    return {(str(r.get("name", "")), str(r.get("version", ""))) for r in refs}


def app_differs(app: Mapping[str, Any], workloads: Sequence[Mapping[str, Any]]) -> bool:
    """Whether an automatic app's workloads or version no longer match its KeptnWorkloads.
    Order does not count: reordering alone must not bump the generation."""
    name = str(meta(app)["name"])
    current = spec(app)
    if current.get("version") != app_version_rule(workloads):
        return True
    return _ref_set(current.get("workloads") or []) != _ref_set(app_workloads(name, workloads))


def apply_app(app: Body, workloads: Sequence[Mapping[str, Any]]) -> Body:
    name = str(meta(app)["name"])
    new_spec = dict(spec(app))
    new_spec["version"] = app_version_rule(workloads)
    new_spec["workloads"] = app_workloads(name, workloads)
    app["spec"] = new_spec
    return app


def uncovered(app: Mapping[str, Any], workloads: Sequence[Mapping[str, Any]]) -> list[Body]:
    """The workload references (name, version) the app does not list yet."""
    have = _ref_set(spec(app).get("workloads") or [])
    return [
        ref
        for ref in app_workloads(str(meta(app)["name"]), workloads)
        if (ref["name"], ref["version"]) not in have
    ]


def app_covers(app: Mapping[str, Any], identity: WorkloadIdentity) -> bool:
    """Whether the app already lists the identity's workload at its version."""
    return (identity.short_name, identity.version) in _ref_set(spec(app).get("workloads") or [])


# --- KeptnAppVersion -------------------------------------------------------------------------


def app_version_name(app: Mapping[str, Any]) -> str:
    return disc.app_version_name(str(meta(app)["name"]), str(spec(app)["version"]), generation(app))


def older_app_version_names(app: Mapping[str, Any]) -> set[str]:
    """The app versions of the same version string from earlier generations: those a revision
    bump deprecates."""
    name, version = str(meta(app)["name"]), str(spec(app)["version"])
    return {disc.app_version_name(name, version, g) for g in range(1, generation(app))}


def context_spec(raw: Mapping[str, Any] | None) -> Body:
    """The part of a KeptnAppContext copied into an app version.

    Raises:
        BadInput: the context does not have the KeptnAppContext shape.
    """
    if raw is None:
        return {}
    try:
        parsed = KeptnAppContext.model_validate(raw)
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
            for err in exc.errors(include_input=False, include_url=False)[:5]
        )
        raise BadInput(
            f"KeptnAppContext {meta(raw).get('name')} cannot be read: {problems}"
        ) from None
    dumped = parsed.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    return _compact({k: dumped.get(k) for k in CONTEXT_KEYS})


def app_version_body(
    app: Mapping[str, Any],
    context: Mapping[str, Any],
    *,
    trace_id: Mapping[str, str] | None = None,
) -> Body:
    """A new KeptnAppVersion for the app's current generation: the app's spec, the context
    merged in, ``appName``, ``previousVersion`` and ``traceId`` (the W3C carrier of the span
    the version's trace descends from); owned by the app."""
    app_spec = spec(app)
    body_spec: Body = {
        "version": str(app_spec["version"]),
        "revision": int(app_spec.get("revision") or 1),
        "appName": str(meta(app)["name"]),
    }
    if app_spec.get("workloads"):
        body_spec["workloads"] = [
            {"name": str(w["name"]), "version": str(w["version"])} for w in app_spec["workloads"]
        ]
    body_spec.update(context)
    previous = previous_version(app)
    if previous:
        body_spec["previousVersion"] = previous
    if trace_id:
        body_spec["traceId"] = dict(trace_id)
    return {
        "apiVersion": "lifecycle.keptn.sh/v1",
        "kind": "KeptnAppVersion",
        "metadata": {
            "name": app_version_name(app),
            "namespace": str(meta(app).get("namespace", "")),
            "ownerReferences": [controller_reference(app)],
        },
        "spec": body_spec,
    }


def is_deprecated(app_version: Mapping[str, Any]) -> bool:
    return status(app_version).get("status") == KeptnState.DEPRECATED.value


def deprecate(app_version: Body) -> Body:
    """``app_version`` with every phase state and the overall state set to Deprecated."""
    new_status = dict(status(app_version))
    for key in DEPRECATED_STATUS_KEYS:
        new_status[key] = KeptnState.DEPRECATED.value
    app_version["status"] = new_status
    return app_version


# --- published events ------------------------------------------------------------------------


def event_id(event_type: str, obj: Mapping[str, Any]) -> str:
    """A CloudEvent id fixed by the object it announces (its uid included), so announcing the
    same object again (a redelivery, a replay, a restart) repeats the same id."""
    m = meta(obj)
    key = f"{event_type}/{m.get('namespace')}/{m.get('name')}/{m.get('uid')}"
    return str(uuid.uuid5(_EVENT_ID_NAMESPACE, key))


def announced(obj: Mapping[str, Any]) -> bool:
    """Whether the scheduler has picked up a version: it writes the status, and nothing else
    does before it. Until then, the "created" event is (re)published."""
    return bool(status(obj))
