"""The handler's decisions, with the cluster and the executor faked at our own seams: which
events are answered, with what, and which actions run (silent ones, the first loud one).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from klt_common.aiokits.errors import PermanentError
from klt_common.clients import cluster as k8s
from klt_common.clients import raw_bus
from klt_task_runner.jobexecutor import config, execution, handler, lookup
from klt_task_runner.jobexecutor.settings import JobExecutorSettings

T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


@dataclass
class FakeCluster:
    configmaps: list[dict[str, Any]] = field(default_factory=list)

    async def list(self, res: k8s.Resource, namespace: str | None = None, **_: Any) -> Any:
        assert res is k8s.CONFIGMAPS
        return k8s.ObjectList(list(self.configmaps), "1")


@dataclass
class FakePublisher:
    sent: list[dict[str, Any]] = field(default_factory=list)
    keys: list[bytes | str | None] = field(default_factory=list)

    async def publish(self, topic: str, value: bytes, **options: Any) -> None:
        assert topic == "keptn.out"
        self.sent.append(json.loads(value))
        self.keys.append(options.get("key"))


@dataclass
class FakeExecutor:
    outcomes: dict[str, execution.ActionOutcome] = field(default_factory=dict)
    ran: list[str] = field(default_factory=list)

    async def run_action(
        self, run: execution.Run, index: int, action: config.Action, stop: asyncio.Event
    ) -> execution.ActionOutcome:
        self.ran.append(action.name)
        return self.outcomes.get(action.name, execution.ActionOutcome(True, "all good", T0))


def _configmap(text: str, **labels: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"cfg-{len(labels)}-{'-'.join(labels.values())}",
            "labels": {"klt.dev/job-config": "true", "keptn.sh/project": "sockshop", **labels},
        },
        "data": {"config.yaml": text},
    }


def _event(
    event_type: str = "sh.keptn.event.test.triggered", data: Any = None
) -> raw_bus.RawRecord:
    body = {
        "specversion": "1.0",
        "id": "e1",
        "source": "shipyard",
        "type": event_type,
        "shkeptncontext": "ctx",
        "data": {"project": "sockshop", "stage": "dev", "service": "carts"}
        if data is None
        else data,
    }
    return raw_bus.RawRecord("t", 0, 0, 0, None, json.dumps(body).encode(), ())


CONFIG = """
apiVersion: v2
actions:
  - name: notify
    silent: true
    events: [{name: "sh.keptn.event.test"}]
    tasks: [{name: n, image: alpine}]
  - name: run
    events: [{name: "sh.keptn.event.test.triggered"}]
    tasks: [{name: t, image: alpine}]
  - name: never
    events: [{name: "sh.keptn.event.test.triggered"}]
    tasks: [{name: t, image: alpine}]
"""


def _make(
    configmaps: list[dict[str, Any]], **settings: Any
) -> tuple[handler.JobExecutor, FakePublisher, FakeExecutor]:
    publisher = FakePublisher()
    clock = iter(T0 + timedelta(seconds=n) for n in range(100))
    executor = handler.JobExecutor(
        JobExecutorSettings(output_topic="keptn.out", **settings),
        FakeCluster(configmaps),  # type: ignore[arg-type]
        publisher,  # type: ignore[arg-type]
        clock=lambda: next(clock),
    )
    fake = FakeExecutor()
    executor._executor = fake  # type: ignore[assignment]
    return executor, publisher, fake


async def test_silent_actions_run_before_the_first_loud_one_which_alone_is_reported() -> None:
    executor, publisher, fake = _make([_configmap(CONFIG)])
    await executor.handle(_event(), stop=asyncio.Event())
    assert fake.ran == ["notify", "run"]
    assert [e["type"] for e in publisher.sent] == [
        "sh.keptn.event.test.started",
        "sh.keptn.event.test.finished",
    ]
    finished = publisher.sent[1]["data"]
    assert finished["status"] == "succeeded"
    assert finished["result"] == "pass"
    assert finished["message"] == "all good"
    assert finished["test"]["start"] == "2025-01-02T03:04:05Z"
    assert publisher.keys == ["ctx", "ctx"]


async def test_a_failed_silent_action_does_not_stop_or_fail_the_loud_one() -> None:
    executor, publisher, fake = _make([_configmap(CONFIG)])
    fake.outcomes["notify"] = execution.ActionOutcome(False, "boom", None)
    fake.outcomes["run"] = execution.ActionOutcome(False, "Task 't' failed: x", None)
    await executor.handle(_event(), stop=asyncio.Event())
    assert fake.ran == ["notify", "run"]
    finished = publisher.sent[-1]["data"]
    assert (finished["status"], finished["result"]) == ("errored", "fail")
    assert finished["message"] == "Task 't' failed: x"


async def test_only_silent_matches_send_nothing() -> None:
    executor, publisher, fake = _make([_configmap(CONFIG)])
    await executor.handle(_event("sh.keptn.event.test.finished"), stop=asyncio.Event())
    assert fake.ran == ["notify"]
    assert publisher.sent == []


async def test_a_loud_action_on_a_non_triggered_event_runs_without_replies() -> None:
    text = "apiVersion: v2\nactions:\n  - name: a\n    events: [{name: finished}]\n    tasks: []\n"
    executor, publisher, fake = _make([_configmap(text)])
    await executor.handle(_event("sh.keptn.event.test.finished"), stop=asyncio.Event())
    assert fake.ran == ["a"]
    assert publisher.sent == []


async def test_without_a_config_a_triggered_event_fails_unless_switched_off() -> None:
    executor, publisher, _ = _make([])
    await executor.handle(_event(), stop=asyncio.Event())
    assert [e["type"].rsplit(".", 1)[1] for e in publisher.sent] == ["started", "finished"]
    data = publisher.sent[1]["data"]
    assert (data["status"], data["result"]) == ("errored", "fail")
    assert data["message"] == handler.NO_CONFIG
    assert (data["project"], data["stage"], data["service"]) == ("sockshop", "dev", "carts")

    quiet, publisher, _ = _make([], always_send_finished_event=False)
    await quiet.handle(_event(), stop=asyncio.Event())
    assert publisher.sent == []


async def test_an_invalid_config_always_fails_a_triggered_event_with_the_path() -> None:
    executor, publisher, fake = _make(
        [_configmap("apiVersion: v2\nactions:\n  - bogus: 1\n")], always_send_finished_event=False
    )
    await executor.handle(_event(), stop=asyncio.Event())
    assert fake.ran == []
    message = publisher.sent[-1]["data"]["message"]
    assert message.startswith(
        "could not retrieve config for job-executor-service: error parsing job configuration:"
    )
    assert "actions[0].bogus: unknown field" in message


async def test_the_most_specific_config_wins() -> None:
    other = "apiVersion: v2\nactions:\n  - name: {n}\n    events: [{{name: triggered}}]\n"
    configmaps = [
        _configmap(other.format(n="project")),
        _configmap(other.format(n="stage"), **{"keptn.sh/stage": "dev"}),
        _configmap(
            other.format(n="service"), **{"keptn.sh/stage": "dev", "keptn.sh/service": "carts"}
        ),
        _configmap(
            other.format(n="other-service"), **{"keptn.sh/stage": "dev", "keptn.sh/service": "x"}
        ),
    ]
    for drop, expected in ((None, "service"), ("service", "stage"), ("stage", "project")):
        if drop is not None:
            configmaps = [
                cm for cm in configmaps if cm["data"]["config.yaml"].find(f"name: {drop}\n") < 0
            ]
        executor, _, fake = _make(configmaps)
        await executor.handle(_event(), stop=asyncio.Event())
        assert fake.ran == [expected]


async def test_two_configs_at_the_same_level_are_an_error_not_a_guess() -> None:
    text = "apiVersion: v2\n"
    first, second = _configmap(text), _configmap(text)
    second["metadata"]["name"] = "another"
    executor, publisher, _ = _make([first, second])
    await executor.handle(_event(), stop=asyncio.Event())
    assert "ambiguous job configuration" in publisher.sent[-1]["data"]["message"]


async def test_unusable_data_fails_the_triggered_event() -> None:
    executor, publisher, _ = _make([])
    await executor.handle(_event(data={"project": 1}), stop=asyncio.Event())
    assert publisher.sent[-1]["data"]["message"] == (
        "failed to convert incoming cloudevent: data.project must be a string, not a number"
    )


async def test_non_task_events_are_skipped_and_garbage_is_dead_lettered() -> None:
    executor, publisher, fake = _make([_configmap(CONFIG)])
    await executor.handle(_event("sh.keptn.event.dev.delivery.triggered"), stop=asyncio.Event())
    assert (publisher.sent, fake.ran) == ([], [])
    garbage = raw_bus.RawRecord("t", 0, 0, 0, None, b"{oops", ())
    with pytest.raises(PermanentError, match="not a CloudEvent"):
        await executor.handle(garbage, stop=asyncio.Event())


def test_the_lookup_labels_are_documented_constants() -> None:
    assert (lookup.LABEL_JOB_CONFIG, lookup.CONFIG_KEY) == ("klt.dev/job-config", "config.yaml")
