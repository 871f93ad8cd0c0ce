"""Keptn's evaluation instruments: ``keptn_evaluation_count_total``,
``keptn_evaluation_duration`` and ``keptn_evaluation_active`` (see
``klt_common.observability.keptn_metrics``).

The count and the duration are recorded by the status write that gives an evaluation its
verdict, which one runner of this shard makes once. The active gauge follows the evaluation
watch cache (this shard's evaluations), so a scrape lists nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry

from klt_common.observability.keptn_metrics import CheckIdentity, CheckMeters, seconds_between


def _part(obj: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = obj.get(key)
    return value if isinstance(value, Mapping) else {}


def identity(evaluation: Mapping[str, Any]) -> CheckIdentity:
    """Keptn's evaluation attributes: app, workload, the evaluation's name and type."""
    spec = _part(evaluation, "spec")
    return CheckIdentity(
        app=str(spec.get("appName") or ""),
        app_version=str(spec.get("appVersion") or ""),
        workload=str(spec.get("workload") or ""),
        workload_version=str(spec.get("workloadVersion") or ""),
        name=str(_part(evaluation, "metadata").get("name") or ""),
        type=str(spec.get("checkType") or ""),
    )


def _key(evaluation: Mapping[str, Any]) -> tuple[str, str]:
    meta = _part(evaluation, "metadata")
    return (str(meta.get("namespace", "")), str(meta.get("name", "")))


class EvaluationMeters:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._meters = CheckMeters("evaluation", registry)

    def on_evaluation(self, etype: str, evaluation: Mapping[str, Any]) -> None:
        """A watch event of a KeptnEvaluation (or one listed at start-up, as ADDED)."""
        if etype == "DELETED":
            self._meters.gone(_key(evaluation))
            return
        ended = bool(_part(evaluation, "status").get("endTime"))
        self._meters.seen(_key(evaluation), identity(evaluation), ended=ended)

    def finished(self, evaluation: Mapping[str, Any]) -> None:
        """The evaluation as stored by the status write that gave its verdict."""
        status = _part(evaluation, "status")
        self._meters.finished(
            identity(evaluation),
            str(status.get("overallStatus") or ""),
            seconds_between(status.get("startTime"), status.get("endTime")),
        )
        self._meters.seen(_key(evaluation), identity(evaluation), ended=True)
