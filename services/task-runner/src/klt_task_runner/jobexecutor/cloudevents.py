"""Keptn's CloudEvents on Kafka: reading the incoming ones, writing ``.started``/``.finished``.

These are not klt catalogue events: they are Keptn's own JSON, as Keptn's services exchange
them (``sh.keptn.event.<task>.<kind>``, with the extensions ``shkeptncontext``,
``triggeredid``, ``gitcommitid`` and ``shkeptnspecversion``). Both content modes of the
CloudEvents Kafka binding are read:

- **structured**: the record value is the whole event as JSON (``specversion``, ``id``,
  ``type``, ``source``, extensions, ``data``);
- **binary**: attributes in ``ce_*`` headers, the value is the ``data`` (JSON).

Replies are written in structured mode, keyed by ``shkeptncontext`` so that all events of one
Keptn context stay in order on one partition. Their ids are derived from the id of the event
they answer, so a reply sent again after a redelivery is recognisably the same event.

No I/O here.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

CLOUDEVENTS_JSON = "application/cloudevents+json"
KEPTN_SPEC_VERSION = "0.2.4"
"""``shkeptnspecversion`` of the events sent, as JES's go-sdk set it."""

_REPLY_NAMESPACE = uuid.UUID("5f0c3a62-8c1b-4a4e-9a7e-0b6f3d1c2e11")
"""Namespace of the name-based (v5) UUIDs of replies."""

_TASK_EVENT_PREFIX = ("sh", "keptn", "event")

Kind = Literal["started", "finished"]


class EventFormatError(ValueError):
    """The record is not a CloudEvent we can read."""


@dataclass(frozen=True)
class KeptnEvent:
    """One incoming Keptn CloudEvent."""

    type: str
    id: str
    source: str
    specversion: str
    shkeptncontext: str = ""
    triggeredid: str = ""
    gitcommitid: str = ""
    time: str = ""
    data: Any = None
    """The ``data`` as sent (normally a mapping; anything JSON can hold)."""

    extensions: Mapping[str, Any] = field(default_factory=dict)

    @property
    def task(self) -> str | None:
        """``test`` for ``sh.keptn.event.test.triggered``; None if this is no task event."""
        parts = self.type.split(".")
        if len(parts) == 5 and tuple(parts[:3]) == _TASK_EVENT_PREFIX and all(parts[3:]):
            return parts[3]
        return None

    @property
    def kind(self) -> str | None:
        """``triggered``, ``started``, ``finished`` …; None if this is no task event."""
        return self.type.rsplit(".", 1)[-1] if self.task is not None else None

    @property
    def is_triggered(self) -> bool:
        return self.kind == "triggered"

    def mapped(self) -> dict[str, Any]:
        """The document JSONPath expressions are evaluated on, as in JES's event mapper."""
        return {
            "id": self.id,
            "shkeptncontext": self.shkeptncontext,
            "time": self.time,
            "source": self.source,
            "data": self.data,
            "specversion": self.specversion,
            "type": self.type,
            "gitcommitid": self.gitcommitid,
        }

    def partition_key(self) -> str:
        return self.shkeptncontext or self.id


@dataclass(frozen=True)
class Scope:
    """Where an event belongs in Keptn: from ``data.project``/``stage``/``service``."""

    project: str
    stage: str
    service: str
    labels: Mapping[str, Any]


def scope_of(event: KeptnEvent) -> Scope:
    """The event's project, stage, service and labels.

    Raises:
        EventFormatError: ``data`` is no mapping, or one of these has the wrong type.
    """
    data = event.data
    if not isinstance(data, dict):
        raise EventFormatError(f"data must be an object, not {_json_kind(data)}")
    values: dict[str, str] = {}
    for name in ("project", "stage", "service"):
        value = data.get(name, "")
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise EventFormatError(f"data.{name} must be a string, not {_json_kind(value)}")
        values[name] = value
    labels = data.get("labels") or {}
    if not isinstance(labels, dict):
        raise EventFormatError(f"data.labels must be an object, not {_json_kind(labels)}")
    return Scope(**values, labels=labels)


def parse(value: bytes | None, headers: Sequence[tuple[str, bytes]] = ()) -> KeptnEvent:
    """Read one Kafka record as a CloudEvent (structured or binary content mode).

    Raises:
        EventFormatError: it is neither, or required attributes are missing.
    """
    ce_headers = {
        name.lower()[3:]: raw.decode("utf-8", errors="replace")
        for name, raw in headers
        if name.lower().startswith("ce_")
    }
    if "specversion" in ce_headers:
        return _binary(value, ce_headers)
    if value is None:
        raise EventFormatError("the record has no value and no ce_ headers")
    try:
        body = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EventFormatError(f"the record value is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise EventFormatError(f"a CloudEvent is a JSON object, not {_json_kind(body)}")
    return _from_attributes(body, body.get("data"))


def _binary(value: bytes | None, attributes: dict[str, str]) -> KeptnEvent:
    data: Any = None
    if value:
        try:
            data = json.loads(value)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise EventFormatError(f"the data of a binary-mode event is not JSON: {exc}") from None
    return _from_attributes(dict(attributes), data)


_CORE = ("specversion", "id", "type", "source")
_KNOWN = {*_CORE, "shkeptncontext", "triggeredid", "gitcommitid", "time", "data"}


def _from_attributes(attributes: Mapping[str, Any], data: Any) -> KeptnEvent:
    for name in _CORE:
        value = attributes.get(name)
        if not isinstance(value, str) or not value:
            raise EventFormatError(f"the CloudEvent attribute {name!r} is missing or not a string")
    optional: dict[str, str] = {}
    for name in ("shkeptncontext", "triggeredid", "gitcommitid", "time"):
        value = attributes.get(name)
        optional[name] = value if isinstance(value, str) else ""
    return KeptnEvent(
        type=attributes["type"],
        id=attributes["id"],
        source=attributes["source"],
        specversion=attributes["specversion"],
        data=data,
        extensions={k: v for k, v in attributes.items() if k not in _KNOWN},
        **optional,
    )


def reply(
    event: KeptnEvent,
    kind: Kind,
    data: Mapping[str, Any],
    *,
    source: str,
    now: datetime,
) -> dict[str, Any]:
    """The ``.started`` or ``.finished`` CloudEvent answering ``event`` (a task event)."""
    task = event.task
    if task is None:
        raise ValueError(f"{event.type} is not a Keptn task event")
    body: dict[str, Any] = {
        "specversion": "1.0",
        "id": str(uuid.uuid5(_REPLY_NAMESPACE, f"{event.id}/{kind}")),
        "source": source,
        "type": f"sh.keptn.event.{task}.{kind}",
        "time": now.isoformat().replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "shkeptncontext": event.shkeptncontext,
        "triggeredid": event.id,
        "shkeptnspecversion": KEPTN_SPEC_VERSION,
        "data": dict(data),
    }
    if event.gitcommitid:
        body["gitcommitid"] = event.gitcommitid
    return body


def encode(body: Mapping[str, Any]) -> tuple[bytes, list[tuple[str, bytes]]]:
    """A structured-mode record: value and headers."""
    value = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    return value, [("content-type", CLOUDEVENTS_JSON.encode())]


def base_data(scope: Scope) -> dict[str, Any]:
    """The ``data`` fields every reply repeats from the event it answers."""
    data: dict[str, Any] = {
        "project": scope.project,
        "stage": scope.stage,
        "service": scope.service,
    }
    if scope.labels:
        data["labels"] = dict(scope.labels)
    return data


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
