"""core/v1 Events: what ``kubectl describe`` shows users about their objects.

Events are a courtesy to humans, never state: recording one must not fail or slow down the
work it describes, so every error is logged and swallowed.

Keptn's conventions are kept: the reason is ``<PhaseShortName><State>`` (for example
``CreateAppVersionFailed``) and the message reads ``"<Long phase name>: <what happened> /
Namespace: <ns>, Name: <name>[, Version: <version>]"``.

An event's name is derived from the object's uid, the reason and the message, so recording the
same fact twice (an event redelivered from Kafka, two replicas racing, a resync) yields one
Event, not a growing pile: the second create is answered with AlreadyExists and ignored.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from klt_common.clients.cluster import EVENTS, AlreadyExists, ApiError, ClusterClient

_log = logging.getLogger(__name__)

EventType = Literal["Normal", "Warning"]

_MESSAGE_LIMIT = 1024
"""Characters of a message kept: the events.k8s.io API caps a note at 1 KiB, and a longer text
helps nobody in ``kubectl describe``."""


def keptn_message(long_phase: str, text: str, *, namespace: str, name: str, version: str) -> str:
    """Keptn's event message layout."""
    suffix = f" / Namespace: {namespace}, Name: {name}"
    if version:
        suffix += f", Version: {version}"
    return f"{long_phase}: {text}{suffix}"


@dataclass(frozen=True)
class EventRecorder:
    """Records Events about objects, as ``component`` (``reportingComponent``)."""

    client: ClusterClient
    component: str
    instance: str = ""
    enabled: bool = True

    async def record(
        self,
        obj: Mapping[str, Any],
        *,
        type_: EventType,
        reason: str,
        message: str,
        annotations: Mapping[str, str] | None = None,
    ) -> None:
        """Record one Event about ``obj`` (a full object with apiVersion, kind and metadata)."""
        if not self.enabled:
            return
        meta = obj.get("metadata") or {}
        name = str(meta.get("name", ""))
        namespace = str(meta.get("namespace") or "default")
        uid = str(meta.get("uid", ""))
        text = message[:_MESSAGE_LIMIT]
        digest = hashlib.sha256(f"{uid}|{reason}|{text}".encode()).hexdigest()[:16]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        involved = {
            "apiVersion": str(obj.get("apiVersion", "")),
            "kind": str(obj.get("kind", "")),
            "name": name,
            "namespace": namespace,
        }
        if uid:
            involved["uid"] = uid
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{name[:200]}.{digest}",
                "namespace": namespace,
                "annotations": dict(annotations or {}),
            },
            "involvedObject": involved,
            "reason": reason,
            "message": text,
            "type": type_,
            "source": {"component": self.component},
            "reportingComponent": self.component,
            "reportingInstance": self.instance or self.component,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self.client.create(EVENTS, body, namespace)
        except AlreadyExists:
            pass  # the same fact was recorded before (a redelivery, a racing replica)
        except ApiError as exc:
            _log.warning("could not record event %s on %s/%s: %s", reason, namespace, name, exc)
        except Exception:  # noqa: BLE001 - an event must never break the work it reports
            _log.exception("could not record event %s on %s/%s", reason, namespace, name)
