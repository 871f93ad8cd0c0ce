"""The event catalogue: every message klt services exchange over Kafka.

The five services never call each other; they publish and consume the events defined here.
This module owns the wire format and nothing else: no I/O, no Kafka client (``clients.bus``
moves the bytes), so services, tests and the CLI can build and read events without a broker.

Wire format
-----------
Every message is a CloudEvents 1.0 event in **structured content mode**: the Kafka record value
is the whole JSON envelope (``specversion``, ``id``, ``source``, ``type``, ``subject``,
``time``, ``datacontenttype``, ``data`` and our extension ``partitionkey``) and the record
carries the header ``content-type: application/cloudevents+json``. We use one content mode
only, and the structured one, because then a record is self-describing: ``kafka-console-
consumer`` and ``klt events tail`` show everything there is to know about an event without
decoding headers, and a record copied to the dead-letter topic or a file keeps its meaning.
The price (a few hundred bytes of envelope per record) is irrelevant at klt's event rates.

W3C trace context (``traceparent``, ``tracestate``) travels in Kafka headers and not in the
JSON: it describes the delivery, not the event, and keeping it out of the envelope keeps the
envelope identical when an event is re-published.

Ordering
--------
The Kafka key of every event is its ``partitionkey``, ``<namespace>/<app>``. Kafka orders
records per partition only, so keying by app puts every event of one app (and therefore of
one app version and its workloads) on one partition, in publish order. Consumers handle one
partition strictly in order, so e.g. ``workloadversion.created`` is never seen before the
``appversion.created`` that preceded it.

Evolution
---------
Payload models forbid unknown fields, so a typo is an error rather than silently dropped data.
Consequently, adding a field is a two-step change: deploy consumers that know it, then
producers that send it. A change that old consumers cannot read gets a new event type (or a
higher ``schema_version`` handled side by side). Consumers skip event *types* they do not know
(see ``UnknownEventTypeError``), so new types can be introduced producer-first.

Catalogue (topic names before the configurable ``BusSettings.topic_prefix``):

======================================  =================  ===============  ===============
type                                    topic              producer         consumers
======================================  =================  ===============  ===============
``sh.klt.pod.admitted``                 klt.discovery      webhook          app-aggregator
``sh.klt.appversion.created``           klt.lifecycle      app-aggregator   scheduler
``sh.klt.workloadversion.created``      klt.lifecycle      app-aggregator   scheduler
``sh.klt.task.requested``               klt.tasks          scheduler        task-runner
``sh.klt.task.finished``                klt.lifecycle      task-runner      scheduler
``sh.klt.evaluation.requested``         klt.evaluations    scheduler        evaluator
``sh.klt.evaluation.finished``          klt.lifecycle      evaluator        scheduler
``sh.klt.phase.changed``                klt.lifecycle      scheduler        observers
======================================  =================  ===============  ===============

``klt.deadletter`` holds records that could not be handled (see ``clients.bus``).
"""

from __future__ import annotations

import enum
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Generic, Literal, TypeVar

import pydantic
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from klt_common.structs.api.enums import KeptnState

CONTENT_TYPE_HEADER = "content-type"
"""Kafka header that tells a structured-mode CloudEvent from other records."""

CLOUDEVENTS_JSON = "application/cloudevents+json"
"""Value of the ``content-type`` header of every klt record."""

Headers = list[tuple[str, bytes]]
"""Kafka record headers as aiokafka takes and returns them (order kept, names may repeat)."""


class Topic(enum.StrEnum):
    """Topic names before ``BusSettings.topic_prefix`` is prepended."""

    DISCOVERY = "klt.discovery"
    """Pods the webhook admitted; the app-aggregator turns them into Keptn resources."""

    LIFECYCLE = "klt.lifecycle"
    """Everything the scheduler reacts to, and the phase changes it announces."""

    TASKS = "klt.tasks"
    """Work for the task-runner."""

    EVALUATIONS = "klt.evaluations"
    """Work for the evaluator."""

    DEADLETTER = "klt.deadletter"
    """Records no handler could process; kept for inspection and manual replay."""

    def full_name(self, prefix: str) -> str:
        """The topic's name on the broker for an installation using ``prefix``."""
        return f"{prefix}{self.value}"


# One enum for states everywhere: the event's state is the value the resource's status holds.
State = KeptnState

# Names are validated loosely: the apiserver is the authority on what a valid name is, and a
# message the apiserver would reject is better caught there, with a clear status, than
# dead-lettered here. We only guard what the bus itself relies on: non-empty, and no '/' in
# the two parts of the partition key.
Namespace = Annotated[
    str, StringConstraints(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
]
"""A namespace name (RFC 1123 label): never contains '/', so it can prefix the partition key."""

AppName = Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=r"^[^/]+$")]
"""A KeptnApp name (from a label value, so never with '/')."""

Name = Annotated[str, StringConstraints(min_length=1, max_length=253)]
"""The name of a Kubernetes object."""

Text = Annotated[str, StringConstraints(max_length=32_768)]
"""Free text for humans; bounded so one event cannot approach Kafka's record size limit."""


class EventPayload(BaseModel):
    """Base of every event's ``data``: frozen, closed, versioned.

    Subclasses set ``event_type`` and ``topic``; the catalogue below lists them.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    event_type: ClassVar[str]
    """The CloudEvents ``type``."""

    topic: ClassVar[Topic]
    """Where events of this type are published."""

    schema_version: int = 1
    """Version of this payload's schema; bumped only for changes old consumers cannot read."""

    namespace: Namespace
    """Namespace of the application the event is about."""

    app: AppName
    """The KeptnApp the event belongs to; with ``namespace`` it forms the partition key."""

    def partition_key(self) -> str:
        """``<namespace>/<app>``: the Kafka key, so one app's events stay in order."""
        return f"{self.namespace}/{self.app}"

    def default_subject(self) -> str:
        """The CloudEvents ``subject`` when the publisher gives none: the object concerned."""
        return self.app


class OwnerRef(BaseModel):
    """The controller owning an admitted pod (Deployment's ReplicaSet, StatefulSet, …)."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    kind: Name
    name: Name
    uid: str
    api_version: Name


class PodAdmitted(EventPayload):
    """The webhook admitted (and annotated) a pod of a Keptn-managed workload.

    Producer: webhook. Consumer: app-aggregator, which creates or updates the KeptnWorkload
    (and, for single-service apps, the KeptnApp) for ``owner``.
    """

    event_type: ClassVar[str] = "sh.klt.pod.admitted"
    topic: ClassVar[Topic] = Topic.DISCOVERY

    pod_name: str
    """May be empty: pods created with ``generateName`` get their name after admission."""

    pod_uid: str
    """May be empty: the apiserver assigns the uid after mutating admission."""

    owner: OwnerRef
    """The workload controller the KeptnWorkload is named after."""

    workload: Name
    """The KeptnWorkload's name (``<app>-<workload label>``)."""

    version: Name
    """The workload version, from the version label or the pod-spec hash."""

    app_type_single_service: bool
    """True when the app was derived from the workload alone (no ``part-of`` label)."""

    pre_deployment_tasks: tuple[Name, ...] = ()
    post_deployment_tasks: tuple[Name, ...] = ()
    pre_deployment_evaluations: tuple[Name, ...] = ()
    post_deployment_evaluations: tuple[Name, ...] = ()

    metadata: dict[str, str] = Field(default_factory=dict)
    """``keptn.sh/metadata``-style key/value pairs handed on to tasks."""

    admitted_at: AwareDatetime
    """When the webhook admitted the pod."""

    def default_subject(self) -> str:
        return self.pod_name or f"{self.owner.kind}/{self.owner.name}"


class AppVersionCreated(EventPayload):
    """A KeptnAppVersion was created. Producer: app-aggregator. Consumer: scheduler."""

    event_type: ClassVar[str] = "sh.klt.appversion.created"
    topic: ClassVar[Topic] = Topic.LIFECYCLE

    app_version_name: Name
    """The KeptnAppVersion object."""

    version: Name
    """The app version (``KeptnApp.spec.version``)."""

    revision: int = Field(default=1, ge=1)
    """``KeptnApp.spec.revision``: bumped to rerun the lifecycle of an unchanged version."""

    generation: int = Field(ge=0)
    """``metadata.generation`` of the KeptnApp the version was made from."""

    def default_subject(self) -> str:
        return self.app_version_name


class WorkloadVersionCreated(EventPayload):
    """A KeptnWorkloadVersion was created. Producer: app-aggregator. Consumer: scheduler."""

    event_type: ClassVar[str] = "sh.klt.workloadversion.created"
    topic: ClassVar[Topic] = Topic.LIFECYCLE

    workload: Name
    """The KeptnWorkload the version belongs to."""

    workload_version_name: Name
    """The KeptnWorkloadVersion object."""

    version: Name

    def default_subject(self) -> str:
        return self.workload_version_name


class TaskRequested(EventPayload):
    """A KeptnTask was created and should run. Producer: scheduler. Consumer: task-runner."""

    event_type: ClassVar[str] = "sh.klt.task.requested"
    topic: ClassVar[Topic] = Topic.TASKS

    task_name: Name
    """The KeptnTask object; the task-runner reads its spec from the apiserver."""

    workload: Name | None = None
    """Set for workload-level tasks, None for app-level ones."""

    phase: Name
    """The lifecycle phase that asked for the task (e.g. ``WorkloadPreDeployTasks``). A plain
    string: the scheduler owns the phase names and consumers only pass them on."""

    def default_subject(self) -> str:
        return self.task_name


class TaskFinished(EventPayload):
    """A KeptnTask reached a final state. Producer: task-runner. Consumer: scheduler."""

    event_type: ClassVar[str] = "sh.klt.task.finished"
    topic: ClassVar[Topic] = Topic.LIFECYCLE

    task_name: Name
    workload: Name | None = None
    state: State
    """Succeeded, Failed, Cancelled, …"""

    reason: Text = ""
    """A short CamelCase reason, as in Kubernetes conditions (e.g. ``DeadlineExceeded``)."""

    message: Text = ""

    def default_subject(self) -> str:
        return self.task_name


class EvaluationRequested(EventPayload):
    """A KeptnEvaluation was created. Producer: scheduler. Consumer: evaluator."""

    event_type: ClassVar[str] = "sh.klt.evaluation.requested"
    topic: ClassVar[Topic] = Topic.EVALUATIONS

    evaluation_name: Name
    """The KeptnEvaluation object; the evaluator reads its spec from the apiserver."""

    workload: Name | None = None
    phase: Name

    def default_subject(self) -> str:
        return self.evaluation_name


class EvaluationFinished(EventPayload):
    """A KeptnEvaluation reached a verdict. Producer: evaluator. Consumer: scheduler."""

    event_type: ClassVar[str] = "sh.klt.evaluation.finished"
    topic: ClassVar[Topic] = Topic.LIFECYCLE

    evaluation_name: Name
    workload: Name | None = None
    state: State
    message: Text = ""

    def default_subject(self) -> str:
        return self.evaluation_name


class PhaseChanged(EventPayload):
    """An app or workload version entered a phase or changed its state.

    Producer: scheduler. Consumers: observers (``klt events tail``, dashboards); the scheduler
    itself skips it.
    """

    event_type: ClassVar[str] = "sh.klt.phase.changed"
    topic: ClassVar[Topic] = Topic.LIFECYCLE

    object_kind: Name
    """``KeptnAppVersion`` or ``KeptnWorkloadVersion``."""

    object_name: Name
    phase: Name
    state: State

    def default_subject(self) -> str:
        return f"{self.object_kind}/{self.object_name}"


P = TypeVar("P", bound=EventPayload)


class Envelope(BaseModel, Generic[P]):
    """A CloudEvents 1.0 event carrying one catalogue payload as ``data``.

    Unknown envelope attributes are ignored rather than rejected: CloudEvents lets any
    intermediary add extension attributes, and they must not make an event undeliverable.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    specversion: Literal["1.0"] = "1.0"
    id: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    """Unique per event (a UUID unless the producer derives it); consumers deduplicate by it."""

    source: Annotated[str, StringConstraints(min_length=1, max_length=1024)]
    """URI-reference of the producing service, e.g. ``/klt/scheduler``."""

    type: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    subject: str | None = None
    time: AwareDatetime
    datacontenttype: Literal["application/json"] = "application/json"
    partitionkey: Annotated[str, StringConstraints(min_length=3, max_length=320)]
    """CloudEvents partitioning extension; equal to the Kafka key."""

    data: P


@dataclass(frozen=True)
class EventSpec:
    """One catalogue entry."""

    model: type[EventPayload]
    producer: str
    consumers: tuple[str, ...]

    @property
    def type(self) -> str:
        return self.model.event_type

    @property
    def topic(self) -> Topic:
        return self.model.topic


def _catalogue(*specs: EventSpec) -> Mapping[str, EventSpec]:
    by_type: dict[str, EventSpec] = {}
    for spec in specs:
        if spec.type in by_type:
            raise AssertionError(f"event type {spec.type} registered twice")
        by_type[spec.type] = spec
    return by_type


CATALOGUE: Mapping[str, EventSpec] = _catalogue(
    EventSpec(PodAdmitted, "webhook", ("app-aggregator",)),
    EventSpec(AppVersionCreated, "app-aggregator", ("scheduler",)),
    EventSpec(WorkloadVersionCreated, "app-aggregator", ("scheduler",)),
    EventSpec(TaskRequested, "scheduler", ("task-runner",)),
    EventSpec(TaskFinished, "task-runner", ("scheduler",)),
    EventSpec(EvaluationRequested, "scheduler", ("evaluator",)),
    EventSpec(EvaluationFinished, "evaluator", ("scheduler",)),
    EventSpec(PhaseChanged, "scheduler", ("observers",)),
)
"""Every known event type, by CloudEvents ``type``."""


def topics_for(models: Iterable[type[EventPayload]]) -> frozenset[Topic]:
    """The topics a consumer of these payload types must subscribe to."""
    return frozenset(model.topic for model in models)


class EventDecodeError(ValueError):
    """A Kafka record is not a klt event this process can read.

    Messages never include field values (only their locations), since a record may carry
    data that must not end up in logs or dead-letter headers.
    """


class MalformedEventError(EventDecodeError):
    """The record is not a valid CloudEvent, or its data does not match the catalogue."""


class UnknownEventTypeError(EventDecodeError):
    """A well-formed CloudEvent of a type this version of klt does not know.

    Consumers skip these: a newer producer may have introduced the type.
    """

    def __init__(self, event_type: str) -> None:
        super().__init__(f"unknown event type {event_type!r}")
        self.event_type = event_type


def make_event(
    payload: P,
    *,
    source: str,
    subject: str | None = None,
    event_id: str | None = None,
    time: datetime | None = None,
) -> Envelope[P]:
    """Wrap ``payload`` in a CloudEvent ready for ``encode``.

    Args:
        payload: the event data; its class decides the type, topic and partition key.
        source: URI-reference of the producer, e.g. ``/klt/webhook``.
        subject: the object concerned; defaults to the payload's ``default_subject()``.
        event_id: a deterministic id, for producers that may re-publish the same fact after
            a crash and want consumers to deduplicate it; a random UUID by default.
        time: when the fact happened; now by default.
    """
    return envelope_model(type(payload))(
        id=event_id or str(uuid.uuid4()),
        source=source,
        type=payload.event_type,
        subject=subject if subject is not None else payload.default_subject(),
        time=time or datetime.now(UTC),
        partitionkey=payload.partition_key(),
        data=payload,
    )


def envelope_model(model: type[P]) -> type[Envelope[P]]:
    """The envelope class for one payload type (pydantic caches the parametrisation).

    An unparametrised ``Envelope`` would validate and serialise ``data`` as the base class,
    dropping every field the subclass adds, so envelopes are always built through this.
    """
    return Envelope[model]  # type: ignore[valid-type]


def encode(envelope: Envelope[Any]) -> tuple[bytes, Headers]:
    """Serialise an event to a Kafka record value and headers (structured content mode)."""
    return envelope.model_dump_json().encode(), [(CONTENT_TYPE_HEADER, CLOUDEVENTS_JSON.encode())]


def decode(value: bytes | None, headers: Sequence[tuple[str, bytes]] = ()) -> Envelope[Any]:
    """Parse a Kafka record into an event of a catalogue type.

    A missing ``content-type`` header is accepted (the value is self-describing, and records
    typed in by hand with ``kafka-console-producer`` have none); a different one is not.

    Raises:
        UnknownEventTypeError: a valid CloudEvent whose type is not in ``CATALOGUE``.
        MalformedEventError: anything else that is not a valid klt event.
    """
    content_type = _header(headers, CONTENT_TYPE_HEADER)
    if content_type is not None:
        media_type = content_type.split(";", 1)[0].strip().lower()
        if media_type != CLOUDEVENTS_JSON:
            raise MalformedEventError(f"content-type is {media_type!r}, not {CLOUDEVENTS_JSON}")
    if value is None:
        raise MalformedEventError("record has no value (a tombstone)")
    try:
        raw = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedEventError(
            f"value is not JSON: {type(exc).__name__} at {_where(exc)}"
        ) from None
    if not isinstance(raw, dict):
        raise MalformedEventError(f"value is a JSON {type(raw).__name__}, not an object")
    if raw.get("specversion") != "1.0":
        raise MalformedEventError("specversion is missing or not 1.0")
    event_type = raw.get("type")
    if not isinstance(event_type, str) or not event_type:
        raise MalformedEventError("type is missing or not a string")
    spec = CATALOGUE.get(event_type)
    if spec is None:
        raise UnknownEventTypeError(event_type)
    try:
        envelope: Envelope[Any] = envelope_model(spec.model).model_validate(raw)
    except pydantic.ValidationError as exc:
        raise MalformedEventError(f"invalid {event_type}: {_describe(exc)}") from None
    if envelope.partitionkey != envelope.data.partition_key():
        raise MalformedEventError(
            f"partitionkey does not match the data's namespace/app ({event_type})"
        )
    return envelope


def _header(headers: Sequence[tuple[str, bytes]], name: str) -> str | None:
    for key, raw in headers:
        if key.lower() == name:
            return raw.decode("utf-8", errors="replace")
    return None


def _where(exc: UnicodeDecodeError | json.JSONDecodeError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"line {exc.lineno} column {exc.colno}"
    return f"byte {exc.start}"


def _describe(exc: pydantic.ValidationError, limit: int = 5) -> str:
    # Locations and messages only: pydantic's own str() quotes the offending input values.
    errors = exc.errors(include_input=False, include_url=False, include_context=False)
    parts = [f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in errors]
    more = f" (and {len(parts) - limit} more)" if len(parts) > limit else ""
    return "; ".join(parts[:limit]) + more
