"""Reading a task's Job and pods: outcome, stuck pods, log tails. Pure: no I/O.

A Job is finished once it carries a true ``Complete`` or ``Failed`` condition, or the earlier
``SuccessCriteriaMet`` / ``FailureTarget`` the Job controller sets as soon as it has decided
(before the pods are gone), which is what lets klt report an outcome without waiting for pod
termination. A failed task's ``reason`` and ``message`` are the Job condition's, as in Keptn:
``BackoffLimitExceeded`` / "Job has reached the specified backoff limit", ``DeadlineExceeded`` /
"Job was active longer than specified deadline".

A pod that cannot start (a missing Secret or ConfigMap gives ``CreateContainerConfigError``; a
bad image ``ErrImagePull`` …) stays Pending until the Job's deadline. Kubernetes says why only in
the pod's container status; ``pod_problem`` lifts that into the task's status message, so the
user sees the cause while waiting and in the final message after the deadline.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from klt_common.structs.api.enums import KeptnState

Body = dict[str, Any]

_SUCCEEDED = ("Complete", "SuccessCriteriaMet")
_FAILED = ("Failed", "FailureTarget")

STUCK_REASONS = frozenset(
    {
        "CreateContainerConfigError",
        "CreateContainerError",
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "RunContainerError",
    }
)
"""Container waiting reasons that do not go away by themselves."""

_EVENT_ID_NAMESPACE = uuid.UUID("6f1f0f8e-3c57-4d8b-9a53-2f7c1f0b7a11")

REDACTED = "[redacted]"


@dataclass(frozen=True)
class Outcome:
    """How a task ended."""

    state: KeptnState
    reason: str = ""
    message: str = ""


def job_outcome(job: Body) -> Outcome | None:
    """The outcome once the Job controller has decided it, else None."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("status") != "True":
            continue
        kind = condition.get("type")
        if kind in _FAILED:
            return Outcome(
                KeptnState.FAILED,
                str(condition.get("reason") or ""),
                str(condition.get("message") or ""),
            )
        if kind in _SUCCEEDED:
            return Outcome(KeptnState.SUCCEEDED)
    return None


@dataclass(frozen=True)
class PodProblem:
    """Why a task's pod does not run."""

    reason: str
    message: str


def pod_problem(pods: Iterable[Body]) -> PodProblem | None:
    """The first lasting reason why one of the task's pods cannot start, newest pod first."""
    ordered = sorted(
        pods, key=lambda p: str(p.get("metadata", {}).get("creationTimestamp", "")), reverse=True
    )
    for pod in ordered:
        status = pod.get("status") or {}
        name = pod.get("metadata", {}).get("name", "")
        statuses = [
            *(status.get("initContainerStatuses") or []),
            *(status.get("containerStatuses") or []),
        ]
        for container in statuses:
            waiting = (container.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason")
            if reason in STUCK_REASONS:
                detail = waiting.get("message") or ""
                text = f"pod {name} cannot start: {reason}" + (f": {detail}" if detail else "")
                return PodProblem(str(reason), text)
        for condition in status.get("conditions") or []:
            if (
                condition.get("type") == "PodScheduled"
                and condition.get("status") == "False"
                and condition.get("reason") == "Unschedulable"
            ):
                detail = condition.get("message") or ""
                return PodProblem(
                    "Unschedulable",
                    f"pod {name} cannot be scheduled" + (f": {detail}" if detail else ""),
                )
    return None


def failed_containers(pod: Body) -> list[tuple[str, int, str]]:
    """``(container, restartCount, finishedAt)`` of each container whose last run failed."""
    found: list[tuple[str, int, str]] = []
    for container in (pod.get("status") or {}).get("containerStatuses") or []:
        restarts = int(container.get("restartCount") or 0)
        for key in ("state", "lastState"):
            terminated = (container.get(key) or {}).get("terminated") or {}
            if terminated and terminated.get("exitCode", 0) != 0:
                found.append(
                    (str(container.get("name")), restarts, str(terminated.get("finishedAt")))
                )
                break
    return found


def finished_event_id(task_uid: str, outcome: Outcome) -> str:
    """The CloudEvent id of a task's TaskFinished: the same for the same task and outcome, so a
    re-publish after a crash or by a second replica is recognised as a duplicate."""
    return str(uuid.uuid5(_EVENT_ID_NAMESPACE, f"{task_uid}/{outcome.state}/{outcome.reason}"))


def tail(text: str, *, lines: int, limit_bytes: int) -> str:
    """The last ``lines`` lines of ``text``, cut to at most ``limit_bytes`` UTF-8 bytes."""
    kept = "".join(text.splitlines(keepends=True)[-lines:]) if lines > 0 else ""
    raw = kept.encode()
    if len(raw) <= limit_bytes:
        return kept
    cut = raw[-limit_bytes:].decode(errors="ignore")
    # Start at a line boundary when one is near, so the tail does not open mid-word.
    newline = cut.find("\n")
    return cut[newline + 1 :] if 0 <= newline < 200 else cut


def secret_values(secret: Body, keys: Iterable[str] | None = None) -> list[str]:
    """The values of a Secret's keys (all keys when ``keys`` is None), plus the string leaves of
    values that are JSON objects (SECURE_DATA often holds several secrets as JSON)."""
    data: dict[str, str] = secret.get("data") or {}
    wanted = data.keys() if keys is None else [k for k in keys if k in data]
    values: list[str] = []
    for key in wanted:
        try:
            value = base64.b64decode(data[key]).decode("utf-8", errors="replace")
        except (binascii.Error, ValueError):
            continue
        values.append(value)
        values.append(value.strip())
        try:
            parsed = json.loads(value)
        except ValueError:
            continue
        values.extend(_string_leaves(parsed))
    return values


def _string_leaves(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in _string_leaves(item)]
    if isinstance(value, list):
        return [leaf for item in value for leaf in _string_leaves(item)]
    return []


def redact(text: str, secrets: Iterable[str], *, min_length: int = 3) -> str:
    """``text`` with every occurrence of each secret value replaced by ``[redacted]``.

    Values shorter than ``min_length`` are skipped: masking every "a" would make the log
    unreadable while hiding nothing worth hiding.
    """
    for value in sorted({s for s in secrets if len(s) >= min_length}, key=len, reverse=True):
        text = text.replace(value, REDACTED)
    return text
