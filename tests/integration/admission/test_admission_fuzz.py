"""Whatever an AdmissionReview contains, the webhook answers: a well-formed response (allowed,
or denied with a message) or a 400 for a body that is not a review. Never a 500, never a hang.
"""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from admission_kit import RunningWebhook
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from klt_common.structs import discovery as d


@pytest.fixture(scope="module")
def fuzz_namespace(webhook: RunningWebhook) -> Iterator[str]:
    name = f"t-fuzz-{uuid.uuid4().hex[:8]}"
    subprocess.run(["kubectl", "create", "namespace", name], check=True, capture_output=True)
    subprocess.run(
        ["kubectl", "annotate", "namespace", name, f"{d.NAMESPACE_ENABLED}=enabled"],
        check=True,
        capture_output=True,
    )
    yield name
    subprocess.run(["kubectl", "delete", "namespace", name, "--wait=false"], capture_output=True)


_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=30))
_json = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=10), inner, max_size=3)
    ),
    max_leaves=10,
)
_keys = st.sampled_from(
    [
        d.WORKLOAD,
        d.APP,
        d.VERSION,
        d.CONTAINER,
        d.METADATA,
        d.PRE_TASKS,
        d.K8S_WORKLOAD,
        d.K8S_APP,
        d.GATE_REMOVED,
        "other",
    ]
)
_annotations = st.one_of(_json, st.dictionaries(_keys, st.one_of(st.text(max_size=300), _scalars)))
_owner = st.one_of(
    _json,
    st.fixed_dictionaries(
        {
            "kind": st.sampled_from(
                ["ReplicaSet", "StatefulSet", "DaemonSet", "Rollout", "Job", 5]
            ),
            "name": st.one_of(st.text(max_size=20), st.integers()),
            "uid": st.text(max_size=10),
            "apiVersion": st.sampled_from(["apps/v1", "argoproj.io/v1alpha1"]),
        }
    ),
)
_containers = st.one_of(
    _json,
    st.lists(
        st.fixed_dictionaries({"name": _scalars, "image": _scalars, "env": _json}), max_size=3
    ),
)


@st.composite
def reviews(draw: st.DrawFn, namespace: str) -> Any:
    pod = {
        "metadata": {
            "annotations": draw(_annotations),
            "labels": draw(_annotations),
            "ownerReferences": draw(st.one_of(_json, st.lists(_owner, max_size=2))),
        },
        "spec": {"containers": draw(_containers), "schedulingGates": draw(_json)},
    }
    request = {
        "uid": draw(st.one_of(st.text(max_size=40), _scalars)),
        "kind": draw(st.one_of(_json, st.just({"kind": "Pod"}))),
        "operation": draw(st.sampled_from(["CREATE", "UPDATE", "DELETE", None, 7])),
        "namespace": draw(st.one_of(st.just(namespace), _scalars)),
        "object": draw(st.one_of(st.just(pod), _json)),
    }
    return draw(st.one_of(st.just({"request": request}), _json))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_admission_review_gets_an_answer(
    webhook: RunningWebhook, fuzz_namespace: str, data: st.DataObject
) -> None:
    body = data.draw(reviews(fuzz_namespace))
    request = urllib.request.Request(
        webhook.url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, payload = response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        status, payload = exc.code, None
    assert status in (200, 400)
    if status == 200:
        answer = payload["response"]
        assert isinstance(answer["allowed"], bool)
        # The catch-all for unexpected errors must not be what answered: every shape of input
        # has to be handled on purpose.
        assert not any("could not process" in w for w in answer.get("warnings", []))
        if not answer["allowed"]:
            assert answer["status"]["message"]
