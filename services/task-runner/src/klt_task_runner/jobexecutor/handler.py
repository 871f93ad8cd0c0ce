"""One Keptn CloudEvent, from record to ``.finished``.

1. The record is read as a CloudEvent (structured or binary mode). A record that is not one
   is dead-lettered (``PermanentError``). Events that are not task events
   (``sh.keptn.event.<task>.<kind>``, e.g. sequence events) are skipped.
2. The configuration is found (``lookup``) and parsed (``config``). Without one, a
   ``.triggered`` event is answered with ``.started`` and a failed ``.finished`` when
   ``always_send_finished_event`` is on; an invalid one always is, so the sequence never
   hangs on a broken configuration (JES #298).
3. The matching actions are run in configuration order: every silent one up to and including
   the first non-silent one, which alone is reported. Silent actions send nothing (no
   ``.started`` either) and their failures are only logged.
4. For a ``.triggered`` event with a non-silent match: ``.started`` before the first Job,
   ``.finished`` after the last task, with ``status``/``result`` (``succeeded``/``pass`` or
   ``errored``/``fail``), the tasks' logs in ``message``, and for ``sh.keptn.event.test
   .triggered`` the ``test.start``/``test.end`` times. Other kinds (``.finished`` …) run their
   actions and send nothing.

The handler blocks its partition while the tasks run (ordering per Keptn context is the
bus's promise). Everything it creates is named after the event, and the replies' ids are
derived from the event's, so a redelivered event adopts its Jobs and repeats identical
replies.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from klt_common.aiokits.errors import PermanentError, TemporaryError
from klt_common.clients import cluster as k8s
from klt_common.clients import raw_bus
from klt_task_runner.jobexecutor import cloudevents, config, execution, lookup, matching
from klt_task_runner.jobexecutor.cloudevents import KeptnEvent, Scope
from klt_task_runner.jobexecutor.settings import JobExecutorSettings

_log = logging.getLogger(__name__)

TEST_TRIGGERED = "sh.keptn.event.test.triggered"
NO_CONFIG = (
    "could not retrieve config for job-executor-service: error retrieving job config: "
    "unable to find job configuration"
)


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class JobExecutor:
    """The job executor's record handler (see the module docstring)."""

    def __init__(
        self,
        settings: JobExecutorSettings,
        client: k8s.ClusterClient,
        publisher: raw_bus.RawPublisher,
        *,
        clock: Callable[[], datetime] = execution.now,
    ) -> None:
        self._settings = settings
        self._client = client
        self._publisher = publisher
        self._executor = execution.Executor(settings, client)
        self._clock = clock

    async def handle(self, record: raw_bus.RawRecord, *, stop: asyncio.Event) -> None:
        try:
            event = cloudevents.parse(record.value, record.headers)
        except cloudevents.EventFormatError as exc:
            raise PermanentError(f"not a CloudEvent: {exc}") from None
        if event.task is None:
            _log.debug("skipping %s %s: not a Keptn task event", event.type, event.id)
            return
        await self.handle_event(event, stop=stop)

    async def handle_event(self, event: KeptnEvent, *, stop: asyncio.Event) -> None:
        try:
            scope = cloudevents.scope_of(event)
        except cloudevents.EventFormatError as exc:
            _log.warning("event %s (%s) has unusable data: %s", event.id, event.type, exc)
            await self._fail_early(
                event, None, f"failed to convert incoming cloudevent: {exc}", always=True
            )
            return
        try:
            found = await lookup.find(self._client, self._settings.config_namespace, scope)
        except lookup.ConfigLookupError as exc:
            await self._fail_early(
                event,
                scope,
                f"could not retrieve config for job-executor-service: error retrieving job "
                f"config: {exc}",
                always=True,
            )
            return
        except k8s.ApiError as exc:
            raise TemporaryError(f"cannot list job configurations: {exc}") from exc
        if found is None:
            _log.info(
                "event %s (%s): no job configuration for %s/%s/%s",
                event.id,
                event.type,
                scope.project,
                scope.stage,
                scope.service,
            )
            await self._fail_early(event, scope, NO_CONFIG, always=False)
            return
        try:
            cfg = config.parse(found.text)
        except config.ConfigError as exc:
            _log.warning("job configuration %s/%s is invalid: %s", found.namespace, found.name, exc)
            await self._fail_early(
                event,
                scope,
                "could not retrieve config for job-executor-service: error parsing job "
                f"configuration: {exc}",
                always=True,
            )
            return
        matched = matching.matching_actions(cfg, event)
        if not matched:
            _log.debug("event %s (%s) matches no action of %s", event.id, event.type, found.name)
            return
        run = execution.Run(event, scope, found, config.config_hash(found.text))
        await self._run(run, matched, stop)

    async def _run(
        self, run: execution.Run, matched: list[tuple[int, config.Action]], stop: asyncio.Event
    ) -> None:
        event, scope = run.event, run.scope
        loud = next((i for i, (_, action) in enumerate(matched) if not action.silent), None)
        chosen = matched if loud is None else matched[: loud + 1]
        reply = event.is_triggered and loud is not None
        if reply:
            await self._send(event, "started", cloudevents.base_data(scope))
        began = self._clock()
        for index, action in chosen:
            outcome = await self._executor.run_action(run, index, action, stop)
            if action.silent:
                if not outcome.ok:
                    _log.warning(
                        "silent action %r for event %s failed: %s",
                        action.name,
                        event.id,
                        outcome.message[:500],
                    )
                continue
            if not reply:
                level = logging.INFO if outcome.ok else logging.WARNING
                _log.log(level, "action %r for %s %s ended", action.name, event.type, event.id)
                return
            start = min(began, outcome.started_at) if outcome.started_at else began
            await self._finish(event, scope, outcome, start)
            return

    async def _finish(
        self,
        event: KeptnEvent,
        scope: Scope,
        outcome: execution.ActionOutcome,
        start: datetime,
    ) -> None:
        data = cloudevents.base_data(scope)
        data["status"] = "succeeded" if outcome.ok else "errored"
        data["result"] = "pass" if outcome.ok else "fail"
        data["message"] = execution.bound_message(outcome.message, self._settings.max_message_bytes)
        if event.type == TEST_TRIGGERED:
            data["test"] = {"start": _rfc3339(start), "end": _rfc3339(self._clock())}
        await self._send(event, "finished", data)

    async def _fail_early(
        self, event: KeptnEvent, scope: Scope | None, message: str, *, always: bool
    ) -> None:
        """``.started`` and a failed ``.finished`` for a ``.triggered`` event we cannot run."""
        if not event.is_triggered or not (always or self._settings.always_send_finished_event):
            return
        base = cloudevents.base_data(scope) if scope is not None else _raw_base(event.data)
        await self._send(event, "started", base)
        finished = {**base, "status": "errored", "result": "fail", "message": message}
        await self._send(event, "finished", finished)

    async def _send(
        self, event: KeptnEvent, kind: cloudevents.Kind, data: Mapping[str, Any]
    ) -> None:
        body = cloudevents.reply(event, kind, data, source=self._settings.source, now=self._clock())
        value, headers = cloudevents.encode(body)
        await self._publisher.publish(
            self._settings.output_topic, value, key=event.partition_key(), headers=headers
        )
        _log.info("sent %s for %s (%s)", body["type"], event.id, data.get("result", "-"))


def _raw_base(data: object) -> dict[str, Any]:
    """What can be copied from data that did not decode: its string project/stage/service."""
    if not isinstance(data, dict):
        return {}
    return {k: data[k] for k in ("project", "stage", "service") if isinstance(data.get(k), str)}
