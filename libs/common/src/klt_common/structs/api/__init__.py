"""Pydantic models of the Keptn Kubernetes API that klt reads and writes, and their registry.

klt keeps Keptn's API groups so existing manifests work unchanged:

- ``lifecycle.keptn.sh/v1`` (:mod:`.lifecycle`): apps, workloads, their versions, tasks,
  evaluations and their definitions;
- ``metrics.keptn.sh/v1`` (:mod:`.metrics`): metrics, providers and analyses;
- ``options.keptn.sh/v1alpha1`` (:mod:`.options`): the KeptnConfig.

This package exports the top-level resource classes, the shared enums and the registry. The
nested spec/status classes live in the group modules; import the module
(``from klt_common.structs.api import lifecycle``) and refer to ``lifecycle.KeptnTaskSpec``.
The modelling rules (aliases, leniency, defaults) are explained in :mod:`._base`.

Pure data: no I/O, and no Kubernetes or Kafka client imports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from klt_common.structs.api import enums, lifecycle, metrics, options
from klt_common.structs.api._base import (
    KeptnResource,
    ObjectMeta,
    OwnerReference,
    parse_duration,
    unknown_fields,
)
from klt_common.structs.api.enums import (
    Aggregation,
    AnalysisState,
    CheckType,
    KeptnState,
    Phase,
)
from klt_common.structs.api.lifecycle import (
    ItemStatus,
    KeptnApp,
    KeptnAppContext,
    KeptnAppCreationRequest,
    KeptnAppVersion,
    KeptnEvaluation,
    KeptnEvaluationDefinition,
    KeptnTask,
    KeptnTaskDefinition,
    KeptnWorkload,
    KeptnWorkloadVersion,
)
from klt_common.structs.api.metrics import (
    Analysis,
    AnalysisDefinition,
    AnalysisValueTemplate,
    KeptnMetric,
    KeptnMetricsProvider,
)
from klt_common.structs.api.options import KeptnConfig

__all__ = [
    "Aggregation",
    "Analysis",
    "AnalysisDefinition",
    "AnalysisState",
    "AnalysisValueTemplate",
    "CheckType",
    "ItemStatus",
    "KeptnApp",
    "KeptnAppContext",
    "KeptnAppCreationRequest",
    "KeptnAppVersion",
    "KeptnConfig",
    "KeptnEvaluation",
    "KeptnEvaluationDefinition",
    "KeptnMetric",
    "KeptnMetricsProvider",
    "KeptnResource",
    "KeptnState",
    "KeptnTask",
    "KeptnTaskDefinition",
    "KeptnWorkload",
    "KeptnWorkloadVersion",
    "ObjectMeta",
    "OwnerReference",
    "Phase",
    "ResourceKind",
    "UnknownKindError",
    "by_kind",
    "by_plural",
    "enums",
    "lifecycle",
    "metrics",
    "options",
    "parse_duration",
    "parse_resource",
    "resource_kinds",
    "unknown_fields",
]


@dataclass(frozen=True, slots=True)
class ResourceKind:
    """Identity of one Keptn resource kind and the model that parses it."""

    group: str
    version: str
    """The version klt reads and writes (and the CRD's storage version)."""
    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    namespaced: bool
    model: type[KeptnResource]

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{self.group}"


class UnknownKindError(LookupError):
    """No registered Keptn resource matches the lookup."""


def _kind(
    model: type[KeptnResource], plural: str, short_names: tuple[str, ...] = ()
) -> ResourceKind:
    group, version = model.API_VERSION.split("/")
    kind = model.model_fields["kind"].default
    return ResourceKind(
        group=group,
        version=version,
        kind=kind,
        plural=plural,
        singular=kind.lower(),
        short_names=short_names,
        namespaced=True,
        model=model,
    )


# Short names are Keptn's; the plurals are the CRD resource names Keptn registered.
_KINDS: tuple[ResourceKind, ...] = (
    _kind(KeptnApp, "keptnapps"),
    _kind(KeptnAppContext, "keptnappcontexts"),
    _kind(KeptnAppCreationRequest, "keptnappcreationrequests"),
    _kind(KeptnAppVersion, "keptnappversions", ("kav",)),
    _kind(KeptnWorkload, "keptnworkloads"),
    _kind(KeptnWorkloadVersion, "keptnworkloadversions", ("kwv",)),
    _kind(KeptnTaskDefinition, "keptntaskdefinitions"),
    _kind(KeptnTask, "keptntasks"),
    _kind(KeptnEvaluationDefinition, "keptnevaluationdefinitions", ("ked",)),
    _kind(KeptnEvaluation, "keptnevaluations", ("ke",)),
    _kind(KeptnMetric, "keptnmetrics"),
    _kind(KeptnMetricsProvider, "keptnmetricsproviders", ("kmp",)),
    _kind(Analysis, "analyses"),
    _kind(AnalysisDefinition, "analysisdefinitions"),
    _kind(AnalysisValueTemplate, "analysisvaluetemplates"),
    _kind(KeptnConfig, "keptnconfigs"),
)
_BY_KIND = {entry.kind: entry for entry in _KINDS}
_BY_PLURAL = {(entry.group, entry.plural): entry for entry in _KINDS}


def resource_kinds() -> tuple[ResourceKind, ...]:
    """Every registered kind, lifecycle first, in a stable order."""
    return _KINDS


def by_kind(kind: str) -> ResourceKind:
    """Look a kind up by its name (``"KeptnApp"``); kind names are unique across the groups.

    Raises:
        UnknownKindError: if klt does not know the kind.
    """
    try:
        return _BY_KIND[kind]
    except KeyError:
        raise UnknownKindError(f"unknown Keptn kind {kind!r}") from None


def by_plural(group: str, plural: str) -> ResourceKind:
    """Look a kind up by API group and resource name (``"lifecycle.keptn.sh", "keptnapps"``).

    Raises:
        UnknownKindError: if klt does not serve that resource.
    """
    try:
        return _BY_PLURAL[(group, plural)]
    except KeyError:
        raise UnknownKindError(f"unknown Keptn resource {plural}.{group}") from None


def parse_resource(obj: Mapping[str, Any]) -> KeptnResource:
    """Parse a Kubernetes object (as read from the apiserver) into its model, by ``kind``.

    Raises:
        UnknownKindError: if the kind is missing or not a Keptn kind.
        pydantic.ValidationError: if the object does not fit the model.
    """
    kind = obj.get("kind")
    if not isinstance(kind, str):
        raise UnknownKindError("object has no 'kind'")
    return by_kind(kind).model.model_validate(obj)
