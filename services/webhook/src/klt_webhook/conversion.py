"""Conversion of Keptn resources between their served versions and ``v1``. Pure; no I/O.

Every CRD with more than one version stores ``v1`` and serves Keptn's older versions (see
:func:`klt_common.structs.crdgen.served_versions`). The apiserver sends this module's
:func:`convert` every object that must change version: old → ``v1`` when one is written,
``v1`` → old when one is read at an old version, and old → old through ``v1``.

**What changes between versions** is the spec; statuses kept their shape and pass unchanged.
Each old version is described by the top-level spec fields it knew and how those map to ``v1``:

- KeptnTaskDefinition ``v1alpha1``/``v1alpha2`` had only ``function``, which is ``v1``'s
  ``deno``; ``v1alpha3``/``v1beta1`` had ``function`` (deprecated), ``deno``, ``python`` and
  ``container``;
- KeptnApp ``v1alpha*`` carried app-level checks (``preDeploymentTasks`` …) that ``v1`` moved
  to KeptnAppContext; ``v1alpha1`` had no ``revision``;
- KeptnAppVersion ``v1alpha*`` lacked promotion tasks, metadata and span links;
- KeptnWorkload ``v1alpha*`` lacked ``metadata``;
- KeptnTask ``v1alpha1``/``v1alpha2`` repeated the context at the top level (``app``,
  ``workload`` …) and had no ``retries``/``timeout``;
- KeptnEvaluationDefinition ``v1alpha1``/``v1alpha2`` named a provider (``source``) and a query
  per objective; ``v1`` objectives reference a KeptnMetric (here: the metric named like the
  objective);
- KeptnEvaluation had ``failAction``; KeptnMetric ``v1alpha1``/``v1alpha2`` had no ``range``;
  KeptnMetricsProvider ``v1alpha2`` had no ``type``.

**Round trips are lossless.** Keptn's conversions dropped what the target version could not
hold (a ``v1alpha1`` KeptnApp's checks were simply lost). Here such fields travel in the
annotation :data:`PRESERVED` (JSON) and come back when the object is converted back, so
old → ``v1`` → old and ``v1`` → old → ``v1`` give the object that went in. A preserved value is
only restored while it still agrees with the field it was derived from, so an edit made in the
other version wins. Fields the old version did not know and that hold their ``v1`` default are
not preserved: the apiserver defaults them again. Object metadata other than that annotation is
never touched, as the apiserver requires of a conversion webhook.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Final, get_args

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from klt_common.structs import api, crdgen

__all__ = [
    "PRESERVED",
    "ConversionError",
    "convert",
    "convertible_kinds",
]

PRESERVED: Final = "conversion.klt.dev/preserved"
"""Annotation holding the fields the object's current version cannot express (JSON)."""

Json = Any


class ConversionError(ValueError):
    """The object cannot be converted to the requested version; the message says why."""


def _same(value: Json) -> Json:
    return value


@dataclass(frozen=True, slots=True)
class FieldMap:
    """Where one old spec field lives in ``v1``, and how its value changes on the way."""

    new: str
    up: Callable[[Json], Json] = _same
    down: Callable[[Json], Json] = _same


@dataclass(frozen=True, slots=True)
class OldVersion:
    """The spec layout of one served pre-``v1`` version.

    Attributes:
        known: the top-level spec fields of the version; None means "the same as ``v1``".
        fields: old fields whose ``v1`` name or value differs.
        down_names: the old field a ``v1`` field becomes by default (when no annotation says
            which of several old spellings it came from).
    """

    known: frozenset[str] | None = None
    fields: Mapping[str, FieldMap] = field(default_factory=dict)
    down_names: Mapping[str, str] = field(default_factory=dict)

    def knows(self, name: str) -> bool:
        return self.known is None or name in self.known


_CHECKS = frozenset(
    {
        "preDeploymentTasks",
        "postDeploymentTasks",
        "preDeploymentEvaluations",
        "postDeploymentEvaluations",
    }
)

# --- KeptnEvaluationDefinition objectives (v1alpha1/v1alpha2 → v1) ------------------------------


def _objectives_up(value: Json) -> Json:
    if not isinstance(value, list):
        return value
    converted: list[Json] = []
    for item in value:
        if not isinstance(item, dict):
            converted.append(item)
            continue
        new = {k: v for k, v in item.items() if k not in ("name", "query")}
        new["keptnMetricRef"] = {"name": item.get("name", "")}
        converted.append(new)
    return converted


def _objectives_down(value: Json) -> Json:
    if not isinstance(value, list):
        return value
    converted: list[Json] = []
    for item in value:
        ref = item.get("keptnMetricRef") if isinstance(item, dict) else None
        if not isinstance(item, dict) or not isinstance(ref, dict):
            converted.append(item)
            continue
        new = {k: v for k, v in item.items() if k != "keptnMetricRef"}
        new["name"] = ref.get("name", "")
        new["query"] = ""
        converted.append(new)
    return converted


_FUNCTION_IS_DENO = {"function": FieldMap("deno")}
_TASK_DEFINITION_V1ALPHA3 = OldVersion(
    known=frozenset(
        {
            "function",
            "python",
            "deno",
            "container",
            "retries",
            "timeout",
            "serviceAccount",
            "automountServiceAccountToken",
            "ttlSecondsAfterFinished",
            "imagePullSecrets",
        }
    ),
    fields=_FUNCTION_IS_DENO,
)
_TASK_DEFINITION_V1ALPHA1 = OldVersion(
    known=frozenset({"function"}), fields=_FUNCTION_IS_DENO, down_names={"deno": "function"}
)
_APP_FIELDS = frozenset({"version", "workloads"}) | _CHECKS
_APP_V1ALPHA1 = OldVersion(known=_APP_FIELDS)
_APP_V1ALPHA2 = OldVersion(known=_APP_FIELDS | {"revision"})
_APP_VERSION_FIELDS = _APP_FIELDS | {"appName", "previousVersion", "traceId"}
_APP_VERSION_V1ALPHA1 = OldVersion(known=_APP_VERSION_FIELDS)
_APP_VERSION_V1ALPHA2 = OldVersion(known=_APP_VERSION_FIELDS | {"revision"})
_WORKLOAD_V1ALPHA = OldVersion(known=frozenset({"app", "version", "resourceReference"}) | _CHECKS)
_TASK_FIELDS = frozenset(
    {
        "workload",
        "workloadVersion",
        "app",
        "appVersion",
        "taskDefinition",
        "context",
        "parameters",
        "secureParameters",
        "checkType",
    }
)
_TASK_V1ALPHA1 = OldVersion(known=_TASK_FIELDS)
# v1alpha3 first had the v1alpha1 layout, then dropped the repeated context fields; objects
# of both shapes exist.
_TASK_V1ALPHA3 = OldVersion(known=_TASK_FIELDS | {"retries", "timeout"})
_EVALUATION_DEFINITION_V1ALPHA1 = OldVersion(
    known=frozenset({"source", "objectives"}),
    fields={"objectives": FieldMap("objectives", _objectives_up, _objectives_down)},
)
_EVALUATION_DEFINITION_V1ALPHA3 = OldVersion(known=frozenset({"objectives"}))
_EVALUATION = OldVersion(
    known=frozenset(
        {
            "workload",
            "workloadVersion",
            "appName",
            "appVersion",
            "evaluationDefinition",
            "checkType",
            "retries",
            "retryInterval",
            "failAction",
        }
    )
)
_METRIC_FIELDS = frozenset({"provider", "query", "fetchIntervalSeconds"})
_METRIC_V1ALPHA1 = OldVersion(known=_METRIC_FIELDS)
_METRIC_V1ALPHA3 = OldVersion(known=_METRIC_FIELDS | {"range"})
_PROVIDER_FIELDS = frozenset({"targetServer", "secretKeyRef"})
_PROVIDER_V1ALPHA2 = OldVersion(known=_PROVIDER_FIELDS)
_PROVIDER_V1ALPHA3 = OldVersion(known=_PROVIDER_FIELDS | {"type"})

#: Per kind and old version, its layout. A served version missing here has ``v1``'s layout.
OLD_VERSIONS: dict[str, dict[str, OldVersion]] = {
    "KeptnTaskDefinition": {
        "v1alpha1": _TASK_DEFINITION_V1ALPHA1,
        "v1alpha2": _TASK_DEFINITION_V1ALPHA1,
        "v1alpha3": _TASK_DEFINITION_V1ALPHA3,
        "v1beta1": _TASK_DEFINITION_V1ALPHA3,
    },
    "KeptnApp": {
        "v1alpha1": _APP_V1ALPHA1,
        "v1alpha2": _APP_V1ALPHA2,
        "v1alpha3": _APP_V1ALPHA2,
    },
    "KeptnAppVersion": {
        "v1alpha1": _APP_VERSION_V1ALPHA1,
        "v1alpha2": _APP_VERSION_V1ALPHA2,
        "v1alpha3": _APP_VERSION_V1ALPHA2,
    },
    "KeptnWorkload": {
        "v1alpha1": _WORKLOAD_V1ALPHA,
        "v1alpha2": _WORKLOAD_V1ALPHA,
        "v1alpha3": _WORKLOAD_V1ALPHA,
    },
    "KeptnTask": {
        "v1alpha1": _TASK_V1ALPHA1,
        "v1alpha2": _TASK_V1ALPHA1,
        "v1alpha3": _TASK_V1ALPHA3,
    },
    "KeptnEvaluationDefinition": {
        "v1alpha1": _EVALUATION_DEFINITION_V1ALPHA1,
        "v1alpha2": _EVALUATION_DEFINITION_V1ALPHA1,
        "v1alpha3": _EVALUATION_DEFINITION_V1ALPHA3,
    },
    "KeptnEvaluation": {
        "v1alpha1": _EVALUATION,
        "v1alpha2": _EVALUATION,
        "v1alpha3": _EVALUATION,
        "v1beta1": _EVALUATION,
    },
    "KeptnMetric": {
        "v1alpha1": _METRIC_V1ALPHA1,
        "v1alpha2": _METRIC_V1ALPHA1,
        "v1alpha3": _METRIC_V1ALPHA3,
    },
    "KeptnMetricsProvider": {
        "v1alpha2": _PROVIDER_V1ALPHA2,
        "v1alpha3": _PROVIDER_V1ALPHA3,
    },
}


# --- v1 facts, derived from the models ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Storage:
    """What ``v1`` knows about a kind's spec: its field names and scalar defaults."""

    known: frozenset[str]
    defaults: Mapping[str, Json]


def _spec_model(model: type[BaseModel]) -> type[BaseModel] | None:
    annotation = model.model_fields["spec"].annotation
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


@functools.cache
def _storage(kind: str) -> _Storage:
    spec = _spec_model(api.by_kind(kind).model)
    if spec is None:
        return _Storage(frozenset(), {})
    known: set[str] = set()
    defaults: dict[str, Json] = {}
    for name, info in spec.model_fields.items():
        key = info.alias or name
        known.add(key)
        default = info.default
        if default is PydanticUndefined or default is None:
            continue
        if isinstance(default, Enum):
            default = default.value
        if isinstance(default, bool | int | float | str):
            defaults[key] = default
    return _Storage(frozenset(known), defaults)


def convertible_kinds() -> dict[str, tuple[str, ...]]:
    """Kind → every served version, for the kinds that serve more than one."""
    return {
        kind.kind: crdgen.served_versions(kind)
        for kind in api.resource_kinds()
        if len(crdgen.served_versions(kind)) > 1
    }


# --- the preserved-fields annotation -----------------------------------------------------------

_MISSING: Final = object()


@dataclass(frozen=True, slots=True)
class _Preserved:
    """Fields of ``origin`` (an apiVersion) that the object's current version cannot hold."""

    origin: str = ""
    spec: Mapping[str, Json] = field(default_factory=dict)
    renamed: Mapping[str, str] = field(default_factory=dict)
    """Old field → the ``v1`` field it became, where the default reverse name would differ."""

    def __bool__(self) -> bool:
        return bool(self.spec or self.renamed)

    def encode(self) -> str:
        payload: dict[str, Json] = {"from": self.origin}
        if self.spec:
            payload["spec"] = dict(self.spec)
        if self.renamed:
            payload["renamed"] = dict(self.renamed)
        return json.dumps(payload, sort_keys=True, separators=(",", ":"))

    @classmethod
    def decode(cls, text: object) -> _Preserved:
        # A damaged annotation (hand-edited, truncated) must not make the object unreadable:
        # it is ignored, and what it held is lost, as Keptn would have lost it anyway.
        if not isinstance(text, str):
            return cls()
        try:
            payload = json.loads(text)
        except ValueError:
            return cls()
        if not isinstance(payload, dict):
            return cls()
        spec = payload.get("spec")
        renamed = payload.get("renamed")
        return cls(
            origin=str(payload.get("from", "")),
            spec=spec if isinstance(spec, dict) else {},
            renamed=(
                {str(k): str(v) for k, v in renamed.items() if isinstance(v, str)}
                if isinstance(renamed, dict)
                else {}
            ),
        )


def _equal(left: Json, right: Json) -> bool:
    # Strict JSON equality: Python's == would take True for 1 and 1.0 for 1.
    return json.dumps(left, sort_keys=True) == json.dumps(right, sort_keys=True)


def _take_preserved(obj: dict[str, Json]) -> _Preserved:
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        return _Preserved()
    annotations = metadata.get("annotations")
    if not isinstance(annotations, dict) or PRESERVED not in annotations:
        return _Preserved()
    preserved = _Preserved.decode(annotations.pop(PRESERVED))
    if not annotations:
        del metadata["annotations"]
    return preserved


def _put_preserved(obj: dict[str, Json], preserved: _Preserved) -> None:
    if not preserved:
        return
    metadata = obj.setdefault("metadata", {})
    if not isinstance(metadata, dict):
        return
    annotations = metadata.get("annotations")
    if not isinstance(annotations, dict):
        annotations = {}
        metadata["annotations"] = annotations
    annotations[PRESERVED] = preserved.encode()


# --- the two directions ------------------------------------------------------------------------


def _up(
    spec: Mapping[str, Json], old: OldVersion, storage: _Storage, carried: _Preserved
) -> tuple[dict[str, Json], _Preserved]:
    """An old spec in ``v1`` form, plus what ``v1`` cannot hold (keyed by old field names).

    ``carried`` holds ``v1`` fields preserved when the object went down to this version.
    """
    result: dict[str, Json] = {}
    lost: dict[str, Json] = {}
    renamed: dict[str, str] = {}

    def renames(name: str) -> bool:
        mapping = old.fields.get(name)
        return mapping is not None and mapping.new != name

    # Fields already spelled the v1 way go first, so a renamed one never displaces them.
    for name in sorted(spec, key=renames):
        value = spec[name]
        mapping = old.fields.get(name, FieldMap(name))
        target = mapping.new
        # A field the old version did not have means nothing there; it is kept, not guessed at.
        if not old.knows(name) or target not in storage.known or target in result:
            lost[name] = value
            continue
        converted = mapping.up(value)
        restored = carried.spec.get(target, _MISSING)
        if restored is not _MISSING and _equal(mapping.down(restored), value):
            converted = restored
        result[target] = converted
        if not _equal(mapping.down(converted), value):
            lost[name] = value
        if target != name and old.down_names.get(target, target) != name:
            renamed[name] = target
    for name, value in carried.spec.items():
        result.setdefault(name, value)
    return result, _Preserved(spec=lost, renamed=renamed)


def _down(
    spec: Mapping[str, Json],
    old: OldVersion,
    storage: _Storage,
    carried: _Preserved,
    *,
    same_version: bool,
) -> tuple[dict[str, Json], _Preserved]:
    """A ``v1`` spec in an old form, plus what the old form cannot hold (keyed by v1 names).

    ``carried`` holds old fields preserved when the object came up to ``v1``; all of them come
    back when it goes down to the version it came from (``same_version``), otherwise those
    this version knows.
    """
    result: dict[str, Json] = {}
    lost: dict[str, Json] = {}
    came_from = {new: previous for previous, new in carried.renamed.items()}
    for name, value in spec.items():
        target = came_from.get(name) or old.down_names.get(name, name)
        if name not in storage.known or not old.knows(target) or target in result:
            # What the apiserver would default again need not travel.
            if name not in storage.defaults or not _equal(storage.defaults[name], value):
                lost[name] = value
            continue
        mapping = old.fields.get(target)
        if mapping is None or mapping.new != name:
            mapping = FieldMap(name)
        converted = mapping.down(value)
        restored = carried.spec.get(target, _MISSING)
        if restored is not _MISSING and _equal(mapping.up(restored), value):
            converted = restored
        result[target] = converted
        if not _equal(mapping.up(converted), value):
            lost[name] = value
    for name, value in carried.spec.items():
        if same_version or old.knows(name):
            result.setdefault(name, value)
    return result, _Preserved(spec=lost)


def _split(api_version: object) -> tuple[str, str]:
    if not isinstance(api_version, str) or api_version.count("/") != 1:
        raise ConversionError(f"apiVersion {api_version!r} is not of the form <group>/<version>")
    group, version = api_version.split("/")
    return group, version


def _to_storage(obj: dict[str, Json], kind: api.ResourceKind, version: str) -> None:
    old = OLD_VERSIONS.get(kind.kind, {}).get(version, OldVersion())
    carried = _take_preserved(obj)
    if carried.origin != kind.api_version:
        # Only an annotation written on the way down from v1 holds v1 fields.
        carried = _Preserved()
    spec = obj.get("spec")
    if isinstance(spec, dict):
        obj["spec"], preserved = _up(spec, old, _storage(kind.kind), carried)
        origin = f"{kind.group}/{version}"
        _put_preserved(obj, _Preserved(origin, preserved.spec, preserved.renamed))
    obj["apiVersion"] = kind.api_version


def _from_storage(obj: dict[str, Json], kind: api.ResourceKind, version: str) -> None:
    old = OLD_VERSIONS.get(kind.kind, {}).get(version, OldVersion())
    carried = _take_preserved(obj)
    if carried.origin == kind.api_version:
        carried = _Preserved()
    spec = obj.get("spec")
    if isinstance(spec, dict):
        same_version = carried.origin == f"{kind.group}/{version}"
        obj["spec"], preserved = _down(
            spec, old, _storage(kind.kind), carried, same_version=same_version
        )
        _put_preserved(obj, _Preserved(kind.api_version, preserved.spec))
    obj["apiVersion"] = f"{kind.group}/{version}"


def convert(obj: Mapping[str, Json], desired_api_version: str) -> dict[str, Json]:
    """``obj`` converted to ``desired_api_version``; the input is not modified.

    Raises:
        ConversionError: if the object is not a klt kind, or either version is not served.
    """
    if not isinstance(obj, Mapping):
        raise ConversionError(f"expected an object, got {type(obj).__name__}")
    kind_name = obj.get("kind")
    try:
        kind = api.by_kind(kind_name if isinstance(kind_name, str) else "")
    except api.UnknownKindError:
        raise ConversionError(f"kind {kind_name!r} is not a klt resource") from None
    source_group, source_version = _split(obj.get("apiVersion"))
    target_group, target_version = _split(desired_api_version)
    served = crdgen.served_versions(kind)
    for group, version in ((source_group, source_version), (target_group, target_version)):
        if group != kind.group or version not in served:
            raise ConversionError(
                f"{kind.kind} is served as {kind.group}/{{{','.join(served)}}}, "
                f"not {group}/{version}"
            )
    result: dict[str, Json] = copy.deepcopy(dict(obj))
    if source_version == target_version:
        return result
    if source_version != kind.version:
        _to_storage(result, kind, source_version)
    if target_version != kind.version:
        _from_storage(result, kind, target_version)
    return result
