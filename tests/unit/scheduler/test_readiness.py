"""Keptn's deployment check per kind: ReplicaSet, StatefulSet, DaemonSet, Argo Rollout."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from klt_scheduler import machine

counts = st.integers(min_value=0, max_value=5)


def _rs(replicas: int | None, available: int | None, *, rollout: bool = False) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": {"name": "web"}, "spec": {}, "status": {}}
    if replicas is not None:
        obj["spec"]["replicas"] = replicas
    if available is not None:
        obj["status"]["availableReplicas"] = available
    if rollout:
        obj["metadata"]["ownerReferences"] = [{"kind": "Rollout", "name": "web", "uid": "r-1"}]
    return obj


@given(counts, counts)
def test_a_replicaset_is_ready_when_all_replicas_are_available(
    replicas: int, available: int
) -> None:
    assert machine.is_ready("ReplicaSet", _rs(replicas, available)) is (replicas == available)


@given(counts, counts)
def test_a_statefulset_is_ready_when_all_replicas_are_available(
    replicas: int, available: int
) -> None:
    assert machine.is_ready("StatefulSet", _rs(replicas, available)) is (replicas == available)


def test_replicas_default_to_one_and_a_missing_status_to_zero() -> None:
    assert not machine.is_ready("ReplicaSet", _rs(None, None))
    assert machine.is_ready("ReplicaSet", _rs(None, 1))
    assert machine.is_ready("ReplicaSet", _rs(0, None))


@given(counts, counts)
def test_a_daemonset_is_ready_when_every_scheduled_pod_is_ready(desired: int, ready: int) -> None:
    ds = {"status": {"desiredNumberScheduled": desired, "numberReady": ready}}
    assert machine.is_ready("DaemonSet", ds) is (desired == ready)


@pytest.mark.parametrize(
    ("rollout", "ready"),
    [
        pytest.param({"status": {"replicas": 3, "updatedReplicas": 3, "phase": "Healthy"}}, True),
        pytest.param({"status": {"replicas": 3, "updatedReplicas": 2, "phase": "Healthy"}}, False),
        pytest.param(
            {"status": {"replicas": 3, "updatedReplicas": 3, "phase": "Progressing"}}, False
        ),
        pytest.param(None, False, id="rollout-not-found"),
    ],
)
def test_a_replicaset_of_an_argo_rollout_follows_the_rollouts_health(
    rollout: dict[str, Any] | None, ready: bool
) -> None:
    # The ReplicaSet's own counts do not matter once a Rollout owns it.
    rs = _rs(3, 3, rollout=True)
    assert machine.rollout_owner(rs) == {"kind": "Rollout", "name": "web", "uid": "r-1"}
    assert machine.is_ready("ReplicaSet", rs, rollout) is ready


@pytest.mark.parametrize("kind", ["Deployment", "Pod", "Job", ""])
def test_other_kinds_are_not_supported(kind: str) -> None:
    with pytest.raises(machine.UnsupportedKind):
        machine.is_ready(kind, _rs(1, 1))
