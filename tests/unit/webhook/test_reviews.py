"""AdmissionReview and ConversionReview handling: the pure layer under the HTTPS endpoints.

A body that is not a review raises ``BadReview`` (the server answers 400); everything else is
answered inside a well-formed review. Hypothesis throws arbitrary JSON and near-valid reviews
at both handlers: they never raise anything else, and every answer has the shape the apiserver
requires (matching uid, ``allowed`` or a ``result``).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from klt_webhook import reviews


def _admission(obj: Any, *, operation: str = "CREATE", uid: str = "u-1") -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {"uid": uid, "operation": operation, "object": obj},
    }


def _task_definition(spec: dict[str, Any], version: str = "v1") -> dict[str, Any]:
    return {
        "apiVersion": f"lifecycle.keptn.sh/{version}",
        "kind": "KeptnTaskDefinition",
        "metadata": {"name": "hello"},
        "spec": spec,
    }


def test_a_valid_object_is_allowed() -> None:
    answer = reviews.validation_review(
        _admission(_task_definition({"deno": {}})), "KeptnTaskDefinition"
    )
    assert answer == {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": "u-1", "allowed": True},
    }


def test_an_invalid_object_is_denied_as_invalid_with_the_reason() -> None:
    answer = reviews.validation_review(_admission(_task_definition({})), "KeptnTaskDefinition")
    response = answer["response"]
    assert response["allowed"] is False
    assert response["status"]["code"] == 422
    assert response["status"]["reason"] == "Invalid"
    assert response["status"]["message"].startswith(
        'KeptnTaskDefinition.lifecycle.keptn.sh "hello" is invalid: spec: Forbidden! Either '
        "Container, Python, or Deno field must be defined"
    )


def test_an_old_version_object_is_converted_before_it_is_checked() -> None:
    v1alpha1 = _task_definition({"function": {"inline": {"code": "x"}}}, "v1alpha1")
    answer = reviews.validation_review(_admission(v1alpha1), "KeptnTaskDefinition")
    assert answer["response"]["allowed"] is True


@pytest.mark.parametrize("operation", ["DELETE", "CONNECT", None])
def test_other_operations_are_allowed(operation: str | None) -> None:
    answer = reviews.validation_review(
        _admission(None, operation=operation),
        "KeptnTaskDefinition",  # type: ignore[arg-type]
    )
    assert answer["response"]["allowed"] is True


def test_a_review_without_an_object_is_denied_not_crashed() -> None:
    answer = reviews.validation_review(_admission("nope"), "KeptnMetric")
    assert answer["response"]["allowed"] is False
    assert "carries no object" in answer["response"]["status"]["message"]


def test_an_object_of_another_kind_is_denied() -> None:
    answer = reviews.validation_review(_admission(_task_definition({})), "Analysis")
    assert (
        "validates Analysis objects, not 'KeptnTaskDefinition'"
        in (answer["response"]["status"]["message"])
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(b"", "empty request body", id="empty"),
        pytest.param(b"{", "not valid JSON", id="not-json"),
        pytest.param(b"[1]", "expected a AdmissionReview object, got list", id="list"),
        pytest.param(b'{"kind": "Pod"}', "expected a AdmissionReview, got kind 'Pod'", id="kind"),
        pytest.param(b"{}", "has no request", id="no-request"),
        pytest.param(b'{"request": {"uid": 5}}', "has no uid", id="uid-not-a-string"),
    ],
)
def test_bodies_that_are_not_reviews_are_bad_requests(body: bytes, message: str) -> None:
    with pytest.raises(reviews.BadReview, match=message):
        reviews.validation_review(reviews.decode(body), "KeptnMetric")


def test_a_conversion_review_converts_every_object() -> None:
    review = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "ConversionReview",
        "request": {
            "uid": "c-1",
            "desiredAPIVersion": "lifecycle.keptn.sh/v1",
            "objects": [
                _task_definition({"function": {"inline": {"code": "a"}}}, "v1alpha1"),
                _task_definition({"deno": {"inline": {"code": "b"}}}, "v1alpha3"),
            ],
        },
    }
    response = reviews.conversion_review(review)["response"]
    assert response["uid"] == "c-1"
    assert response["result"] == {"status": "Success"}
    assert [o["spec"] for o in response["convertedObjects"]] == [
        {"deno": {"inline": {"code": "a"}}},
        {"deno": {"inline": {"code": "b"}}},
    ]


def test_one_object_that_cannot_be_converted_fails_the_review() -> None:
    review = {
        "request": {
            "uid": "c-2",
            "desiredAPIVersion": "lifecycle.keptn.sh/v1",
            "objects": [_task_definition({}), {"apiVersion": "v1", "kind": "Pod"}],
        }
    }
    response = reviews.conversion_review(review)["response"]
    assert response["convertedObjects"] == []
    assert response["result"]["status"] == "Failure"
    assert response["result"]["message"].startswith("objects[1]: kind 'Pod' is not a klt resource")


def test_a_conversion_review_without_a_target_version_fails() -> None:
    response = reviews.conversion_review({"request": {"uid": "c-3", "objects": []}})["response"]
    assert response["result"] == {
        "status": "Failure",
        "message": "the request names no desiredAPIVersion",
    }


# --- properties --------------------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=12,
)
_KINDS = ["KeptnTaskDefinition", "KeptnMetric", "Analysis", "AnalysisDefinition", "KeptnApp"]
_VERSIONS = ["v1", "v1alpha1", "v1alpha3", "v1beta1", "v9"]
_GROUPS = ["lifecycle.keptn.sh", "metrics.keptn.sh", "apps"]


@st.composite
def _objects(draw: st.DrawFn) -> Any:
    if draw(st.booleans()):
        return draw(_json)
    obj: dict[str, Any] = {
        "apiVersion": f"{draw(st.sampled_from(_GROUPS))}/{draw(st.sampled_from(_VERSIONS))}",
        "kind": draw(st.sampled_from(_KINDS)),
        "metadata": draw(st.one_of(st.just({"name": "n"}), _json)),
        "spec": draw(_json),
    }
    if draw(st.booleans()):
        obj["status"] = draw(_json)
    return obj


def _well_formed(answer: dict[str, Any], uid: str, api_version: str, kind: str) -> dict[str, Any]:
    json.dumps(answer)
    assert answer["apiVersion"] == api_version
    assert answer["kind"] == kind
    response: dict[str, Any] = answer["response"]
    assert response["uid"] == uid
    return response


@given(
    uid=st.text(min_size=1, max_size=8),
    operation=st.sampled_from(["CREATE", "UPDATE", "DELETE", 7]),
    obj=_objects(),
    kind=st.sampled_from(["KeptnTaskDefinition", "KeptnMetric", "Analysis", "AnalysisDefinition"]),
)
@settings(max_examples=300)
def test_any_admission_review_gets_a_well_formed_answer(
    uid: str, operation: Any, obj: Any, kind: str
) -> None:
    answer = reviews.validation_review(_admission(obj, operation=operation, uid=uid), kind)
    response = _well_formed(answer, uid, "admission.k8s.io/v1", "AdmissionReview")
    assert isinstance(response["allowed"], bool)
    if not response["allowed"]:
        assert response["status"]["message"]


@given(
    uid=st.text(min_size=1, max_size=8),
    desired=st.one_of(st.sampled_from([f"{g}/{v}" for g in _GROUPS for v in _VERSIONS]), _json),
    objects=st.one_of(st.lists(_objects(), max_size=3), _json),
)
@settings(max_examples=300)
def test_any_conversion_review_gets_a_well_formed_answer(
    uid: str, desired: Any, objects: Any
) -> None:
    review = {"request": {"uid": uid, "desiredAPIVersion": desired, "objects": objects}}
    answer = reviews.conversion_review(review)
    response = _well_formed(answer, uid, "apiextensions.k8s.io/v1", "ConversionReview")
    assert response["result"]["status"] in ("Success", "Failure")
    if response["result"]["status"] == "Success":
        assert len(response["convertedObjects"]) == len(objects or [])
        assert all(o["apiVersion"] == desired for o in response["convertedObjects"])
    else:
        assert response["convertedObjects"] == []
        assert response["result"]["message"]


@given(_json)
def test_arbitrary_json_is_answered_or_refused_as_a_bad_request(body: Any) -> None:
    for handle in (
        reviews.conversion_review,
        lambda review: reviews.validation_review(review, "KeptnMetric"),
    ):
        try:
            answer = handle(body)
        except reviews.BadReview as exc:
            message = str(exc)
            assert message
        else:
            assert answer["response"]["uid"] == body["request"]["uid"]
