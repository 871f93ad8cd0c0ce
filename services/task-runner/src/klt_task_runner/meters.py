"""Keptn's task instruments: ``keptn_task_count_total``, ``keptn_task_duration`` and
``keptn_task_active`` (see ``klt_common.observability.keptn_metrics``).

The count and the duration are recorded by the status write that finishes a task: that write
happens once per task, whichever replica makes it, because a completed status is never written
again. The active gauge follows the task watch cache (this runner class's tasks), so a scrape
lists nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry

from klt_common.observability.keptn_metrics import CheckIdentity, CheckMeters, seconds_between


def _part(obj: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = obj.get(key)
    return value if isinstance(value, Mapping) else {}


def identity(task: Mapping[str, Any]) -> CheckIdentity:
    """Keptn's task attributes: the context's app and workload, the task's name and type."""
    spec = _part(task, "spec")
    context = _part(spec, "context")
    return CheckIdentity(
        app=str(context.get("appName") or ""),
        app_version=str(context.get("appVersion") or ""),
        workload=str(context.get("workloadName") or ""),
        workload_version=str(context.get("workloadVersion") or ""),
        name=str(_part(task, "metadata").get("name") or ""),
        type=str(spec.get("checkType") or ""),
    )


def _key(task: Mapping[str, Any]) -> tuple[str, str]:
    meta = _part(task, "metadata")
    return (str(meta.get("namespace", "")), str(meta.get("name", "")))


class TaskMeters:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._meters = CheckMeters("task", registry)

    def on_task(self, etype: str, task: Mapping[str, Any]) -> None:
        """A watch event of a KeptnTask (the initial list arrives as ADDED events)."""
        if etype == "DELETED":
            self._meters.gone(_key(task))
            return
        ended = bool(_part(task, "status").get("endTime"))
        self._meters.seen(_key(task), identity(task), ended=ended)

    def finished(self, task: Mapping[str, Any]) -> None:
        """The task as stored by the status write that completed it."""
        status = _part(task, "status")
        self._meters.finished(
            identity(task),
            str(status.get("status") or ""),
            seconds_between(status.get("startTime"), status.get("endTime")),
        )
        # The watch will say so too; saying it now keeps the gauge from lagging the count.
        self._meters.seen(_key(task), identity(task), ended=True)
