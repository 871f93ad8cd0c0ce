"""The bus's bookkeeping: outcomes, handler times, dead letters, lag series and publishes land
in the right series of the registry they were given, and nowhere else."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from klt_common.aiokits.errors import PermanentError
from klt_common.observability.bus_metrics import BusMetrics

TOPIC = "t.klt.tasks"
TYPE = "sh.klt.task.requested"


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_outcomes_are_counted_per_group_topic_type_and_outcome() -> None:
    registry = CollectorRegistry()
    metrics = BusMetrics(registry)
    runner, scheduler = metrics.group("klt-task-runner"), metrics.group("klt-scheduler")
    second_scheduler = metrics.group("klt-scheduler")  # two members of one group in a process

    for _ in range(3):
        runner.handled(TOPIC, TYPE, attempts=1)
    runner.handled(TOPIC, TYPE, attempts=3)
    runner.skipped(TOPIC, "unknown")
    runner.dead_lettered(TOPIC, TYPE, PermanentError("bad spec"))
    runner.dead_lettered(TOPIC, "malformed", ValueError("not JSON"))
    scheduler.handled(TOPIC, TYPE, attempts=1)
    second_scheduler.handled(TOPIC, TYPE, attempts=1)

    def consumed(group: str, outcome: str, event_type: str = TYPE) -> float | None:
        return _value(
            registry,
            "klt_bus_consumed_total",
            group=group,
            topic=TOPIC,
            type=event_type,
            outcome=outcome,
        )

    assert consumed("klt-task-runner", "ok") == 3
    assert consumed("klt-task-runner", "retried") == 1
    assert consumed("klt-task-runner", "dead_lettered") == 1
    assert consumed("klt-task-runner", "dead_lettered", "malformed") == 1
    assert consumed("klt-task-runner", "skipped", "unknown") == 1
    assert consumed("klt-scheduler", "ok") == 2
    assert consumed("klt-scheduler", "retried") is None
    for error, count in (("PermanentError", 1), ("ValueError", 1), ("TemporaryError", None)):
        assert (
            _value(
                registry,
                "klt_bus_dead_lettered_total",
                group="klt-task-runner",
                topic=TOPIC,
                error=error,
            )
            == count
        ), error


def test_handler_attempts_are_timed_per_group_and_type() -> None:
    registry = CollectorRegistry()
    group = BusMetrics(registry).group("g")
    for seconds in (0.002, 0.005, 3.0):  # a bound itself belongs to its bucket ("le")
        group.observe_handler(TYPE, seconds)
    labels = {"group": "g", "type": TYPE}
    assert _value(registry, "klt_bus_handler_seconds_count", **labels) == 3
    assert _value(registry, "klt_bus_handler_seconds_sum", **labels) == pytest.approx(3.007)
    assert _value(registry, "klt_bus_handler_seconds_bucket", le="0.0025", **labels) == 1
    assert _value(registry, "klt_bus_handler_seconds_bucket", le="0.005", **labels) == 2
    assert _value(registry, "klt_bus_handler_seconds_bucket", le="2.5", **labels) == 2
    assert _value(registry, "klt_bus_handler_seconds_bucket", le="+Inf", **labels) == 3


def test_lag_series_exist_only_for_partitions_the_member_holds() -> None:
    registry = CollectorRegistry()
    group = BusMetrics(registry).group("g")
    group.set_lag(TOPIC, 0, 12)
    group.set_lag(TOPIC, 1, 0)
    group.set_lag(TOPIC, 0, 4)  # a refresh overwrites
    assert _value(registry, "klt_bus_consumer_lag", group="g", topic=TOPIC, partition="0") == 4
    assert _value(registry, "klt_bus_consumer_lag", group="g", topic=TOPIC, partition="1") == 0

    group.drop_lag(TOPIC, 0)  # revoked: its new owner reports it
    group.drop_lag(TOPIC, 7)  # never held: nothing to do
    assert _value(registry, "klt_bus_consumer_lag", group="g", topic=TOPIC, partition="0") is None
    assert _value(registry, "klt_bus_consumer_lag", group="g", topic=TOPIC, partition="1") == 0

    group.set_lag(TOPIC, 2, 5)
    group.drop_all_lag()  # the member stopped
    assert not [
        sample
        for family in registry.collect()
        if family.name == "klt_bus_consumer_lag"
        for sample in family.samples
    ]


def test_publishes_are_counted_by_topic_and_type_on_the_given_registry_only() -> None:
    registry, other = CollectorRegistry(), CollectorRegistry()
    metrics = BusMetrics(registry)
    BusMetrics(other)  # a second service in the same process has its own series
    for _ in range(2):
        metrics.count_published(TOPIC, TYPE)
    metrics.count_published("t.klt.lifecycle", "sh.klt.phase.changed")
    assert _value(registry, "klt_bus_published_total", topic=TOPIC, type=TYPE) == 2
    assert (
        _value(
            registry,
            "klt_bus_published_total",
            topic="t.klt.lifecycle",
            type="sh.klt.phase.changed",
        )
        == 1
    )
    assert _value(other, "klt_bus_published_total", topic=TOPIC, type=TYPE) is None
