"""Which pods the aggregator's reconciler treats as admitted without the webhook."""

from __future__ import annotations

from typing import Any

import pytest

from klt_app_aggregator.reconciler import missed_by_webhook
from klt_common.structs import discovery as d

OWNER = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d8f", "uid": "u1"}


def _pod(*, gated: bool = False, released: bool = False, owner: Any = OWNER) -> dict[str, Any]:
    annotations = {d.GATE_REMOVED: "true"} if released else {}
    spec: dict[str, Any] = {"containers": [{"name": "web", "image": "nginx"}]}
    if gated:
        spec["schedulingGates"] = [{"name": d.SCHEDULING_GATE}]
    return {
        "metadata": {
            "name": "web-5d8f-x",
            "namespace": "shop",
            "annotations": annotations,
            "ownerReferences": [owner] if owner else [],
        },
        "spec": spec,
    }


def test_a_pod_of_a_workload_with_neither_gate_nor_release_mark_was_missed() -> None:
    assert missed_by_webhook(_pod())


@pytest.mark.parametrize(
    "pod",
    [
        _pod(gated=True),  # the webhook gated it: the gated-pod path handles it
        _pod(released=True),  # the scheduler released it after its checks
        _pod(owner=None),  # a bare pod: Keptn discovers workloads only
        _pod(owner={**OWNER, "kind": "Job", "name": "j"}),  # not a supported owner
    ],
)
def test_gated_released_bare_and_unsupported_pods_were_not_missed(pod: dict[str, Any]) -> None:
    assert not missed_by_webhook(pod)
