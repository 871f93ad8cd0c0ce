"""Building blocks shared by every Keptn API model.

Why the models look the way they do:

- **Wire names are Keptn's.** Python attributes are snake_case; the JSON keys are the camelCase
  names Keptn's Go structs used (``alias_generator``), and a handful of irregular keys
  (``OTelCollectorUrl``, ``phaseTraceIDs``, ``from``, ``pass``) carry explicit aliases. Models
  accept both spellings on input (``populate_by_name``) and always write the JSON spelling.
- **Lenient on read, lossless on write.** Every model keeps keys it does not know
  (``extra="allow"``) and writes them back unchanged. A service that reads an object, changes one
  field and replaces it must not strip a field some newer writer added. The price is that a typo
  in a hand-written manifest passes validation here (the apiserver would prune it silently):
  :func:`unknown_fields` lists such keys so tests and admission code can be strict on purpose.
- **Absent stays absent.** Optional fields default to ``None`` and :meth:`KeptnResource.to_manifest`
  drops ``None``. A read-then-write of an object therefore reproduces it, plus the defaults the
  apiserver would have filled in anyway. Only fields that Keptn's CRDs default carry a non-``None``
  default here, with the same value, because :mod:`klt_common.structs.crdgen` turns scalar
  defaults into CRD ``default:`` entries.
- **CRD hints live next to the field.** :class:`Crd` and :class:`CrdSchema` are inert annotation
  markers. Pydantic ignores them; the CRD generator reads them where the Python type alone cannot
  say what Keptn's schema said (a field that is required although we default it, a free-form
  object).

Nothing here performs I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    PlainSerializer,
    StringConstraints,
)
from pydantic.alias_generators import to_camel

__all__ = [
    "DURATION_PATTERN",
    "ApiModel",
    "Crd",
    "CrdSchema",
    "Duration",
    "FreeForm",
    "KeptnResource",
    "ObjectMeta",
    "OwnerReference",
    "Quantity",
    "Time",
    "parse_duration",
    "unknown_fields",
]


@dataclass(frozen=True, slots=True)
class Crd:
    """CRD-only facts about a field that its Python type cannot express.

    Attributes:
        required: put the field into the CRD's ``required`` list even though the model gives it a
            default (Keptn's status structs declare some fields without ``omitempty``).
        emit_default: set to False when the model default is a read-side convenience that Keptn's
            CRD did not declare.
    """

    required: bool | None = None
    emit_default: bool = True


# eq=False keeps the identity hash: typing hashes Annotated metadata, and a dict cannot be.
@dataclass(frozen=True, slots=True, eq=False)
class CrdSchema:
    """Use this exact OpenAPI fragment for the annotated node instead of deriving one."""

    schema: Mapping[str, Any] = field(default_factory=dict)


class ApiModel(BaseModel):
    """Base of every nested Keptn API struct (spec and status parts)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="allow",
        # Attribute docstrings become field descriptions, and from there CRD descriptions.
        use_attribute_docstrings=True,
    )


# --- scalar types ------------------------------------------------------------------------------

#: The pattern Keptn's CRDs put on ``metav1.Duration`` fields. It is deliberately copied as is,
#: quirks included: the alternation is not grouped, so any string starting with "0" matches.
DURATION_PATTERN = r"^0|([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"

Duration = Annotated[str, StringConstraints(pattern=DURATION_PATTERN)]
"""A Go duration string such as ``5m``, ``1m30s`` or ``250ms`` (see :func:`parse_duration`)."""

_DURATION_PART = re.compile(r"([0-9]*\.?[0-9]+)(ns|us|µs|μs|ms|s|m|h)")
_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # MICRO SIGN
    "μs": 1e-6,  # GREEK SMALL LETTER MU: Go accepts both spellings
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_duration(text: str) -> timedelta:
    """Parse a Go duration string (``time.ParseDuration`` syntax) into a timedelta.

    Args:
        text: for example ``"5m"``, ``"1h30m"``, ``"1.5s"``, ``"-2m"`` or ``"0"``.

    Raises:
        ValueError: if the string is not a Go duration.
    """
    raw = text.strip()
    sign = 1.0
    if raw[:1] in "+-" and raw:
        sign = -1.0 if raw[0] == "-" else 1.0
        raw = raw[1:]
    if raw == "0":
        return timedelta(0)
    if not raw:
        raise ValueError(f"invalid duration {text!r}")
    seconds = 0.0
    position = 0
    for match in _DURATION_PART.finditer(raw):
        if match.start() != position:
            break
        seconds += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    if position != len(raw):
        raise ValueError(f"invalid duration {text!r}")
    return timedelta(seconds=sign * seconds)


def _as_utc(value: datetime) -> datetime:
    # The apiserver always writes UTC with a "Z"; a naive value can only come from our own code,
    # and every klt service keeps time in UTC.
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _format_time(value: datetime) -> str:
    value = _as_utc(value)
    if value.microsecond:
        return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


Time = Annotated[
    datetime,
    AfterValidator(_as_utc),
    PlainSerializer(_format_time, return_type=str, when_used="json"),
]
"""A ``metav1.Time``: RFC 3339 in UTC on the wire, an aware ``datetime`` in Python."""

Quantity = Annotated[
    int | str,
    CrdSchema(
        {"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": True}
    ),
]
"""A Kubernetes ``resource.Quantity``: an integer or a string such as ``"500m"`` or ``"1.5"``."""

FreeForm = dict[str, JsonValue]
"""An object whose keys are not modelled here; it travels through unchanged."""


# --- object metadata ---------------------------------------------------------------------------


class OwnerReference(ApiModel):
    """A ``metav1.OwnerReference``."""

    api_version: str
    kind: str
    name: str
    uid: str
    controller: bool | None = None
    block_owner_deletion: bool | None = None


class ObjectMeta(ApiModel):
    """The parts of ``metav1.ObjectMeta`` klt reads or writes.

    Any other key the apiserver returns (``managedFields``, ``deletionGracePeriodSeconds``, ...)
    is kept as an extra and written back unchanged.
    """

    name: str | None = None
    generate_name: str | None = None
    namespace: str | None = None
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: Time | None = None
    deletion_timestamp: Time | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    owner_references: list[OwnerReference] | None = None
    finalizers: list[str] | None = None


class KeptnResource(ApiModel):
    """Base of every top-level Keptn resource: ``apiVersion``, ``kind``, ``metadata``.

    Subclasses add ``spec`` and ``status`` and pin ``kind`` with a ``Literal`` so an object of
    the wrong kind is rejected instead of being half-parsed.
    """

    API_VERSION: ClassVar[str]

    api_version: str
    kind: str
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)

    def to_manifest(self) -> dict[str, Any]:
        """Return the JSON-ready dict to send to the apiserver (camelCase keys, no ``None``)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# --- strict checking on demand -----------------------------------------------------------------


def _walk_extras(value: object, path: str) -> Iterator[str]:
    if isinstance(value, ObjectMeta | OwnerReference):
        # Metadata is open by design: unknown keys there are real Kubernetes fields.
        return
    if isinstance(value, BaseModel):
        for key in value.model_extra or {}:
            yield f"{path}.{key}" if path else key
        for name, field_info in type(value).model_fields.items():
            key = field_info.alias or name
            yield from _walk_extras(getattr(value, name), f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk_extras(item, f"{path}[{index}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _walk_extras(item, f"{path}.{key}")


def unknown_fields(model: BaseModel) -> list[str]:
    """List the dotted JSON paths of keys the models do not know, outside ``metadata``.

    Free-form objects (a task's ``container``) are not inspected: any key is legal there.
    """
    return list(_walk_extras(model, ""))
