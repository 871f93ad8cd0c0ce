"""AdmissionReview and ConversionReview bodies in, responses out. Pure; no I/O.

The HTTP layer (:mod:`klt_webhook.server`) hands every request body to one of these functions
and sends back what it returns. They never raise anything but :class:`BadReview`, which means
"this is not a review I can answer" (no JSON, no request, no uid) and becomes a 400 with its
message. Anything else (an object of the wrong shape, a version that is not served, a bug) is
answered inside a well-formed review: a denial for admission, a ``Failure`` result for
conversion, so the apiserver shows the user what went wrong instead of a transport error.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from klt_common.structs import api
from klt_webhook import conversion, validation

__all__ = [
    "ADMISSION_API_VERSION",
    "CONVERSION_API_VERSION",
    "BadReview",
    "admission_response",
    "conversion_review",
    "decode",
    "validation_review",
]

_log = logging.getLogger(__name__)

ADMISSION_API_VERSION = "admission.k8s.io/v1"
CONVERSION_API_VERSION = "apiextensions.k8s.io/v1"
_VALIDATED_OPERATIONS = frozenset({"CREATE", "UPDATE"})


class BadReview(ValueError):
    """The body cannot be answered with a review; the HTTP layer answers 400 with the message."""


def decode(body: bytes) -> Any:
    """The JSON value of a request body."""
    if not body:
        raise BadReview("empty request body; expected a JSON AdmissionReview or ConversionReview")
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise BadReview("request body is not valid JSON") from None


def _request(review: Any, kind: str) -> tuple[Mapping[str, Any], str]:
    if not isinstance(review, Mapping):
        raise BadReview(f"expected a {kind} object, got {type(review).__name__}")
    if review.get("kind", kind) != kind:
        raise BadReview(f"expected a {kind}, got kind {review.get('kind')!r}")
    request = review.get("request")
    if not isinstance(request, Mapping):
        raise BadReview(f"{kind} has no request")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise BadReview(f"{kind} request has no uid")
    return request, uid


# --- admission ---------------------------------------------------------------------------------


def admission_response(
    uid: str,
    *,
    allowed: bool,
    message: str | None = None,
    code: int | None = None,
    reason: str | None = None,
    warnings: tuple[str, ...] = (),
) -> dict[str, Any]:
    """An ``admission.k8s.io/v1`` AdmissionReview answering request ``uid``."""
    response: dict[str, Any] = {"uid": uid, "allowed": allowed}
    if not allowed or message:
        status: dict[str, Any] = {"status": "Success" if allowed else "Failure"}
        if message:
            status["message"] = message
        if code is not None:
            status["code"] = code
        if reason:
            status["reason"] = reason
        response["status"] = status
    if warnings:
        response["warnings"] = list(warnings)
    return {"apiVersion": ADMISSION_API_VERSION, "kind": "AdmissionReview", "response": response}


def _deny(uid: str, message: str, *, code: int = 400, reason: str = "BadRequest") -> dict[str, Any]:
    return admission_response(uid, allowed=False, message=message, code=code, reason=reason)


def validation_review(review: Any, kind: str) -> dict[str, Any]:
    """Answer an AdmissionReview for a validating endpoint of ``kind``.

    Objects that arrive at an older version (a webhook registered with ``matchPolicy: Exact``,
    or a review replayed by hand) are converted to ``v1`` first, so the rules are written once.

    Raises:
        BadReview: when the body has no request uid to answer.
    """
    request, uid = _request(review, "AdmissionReview")
    try:
        return _validate(request, uid, kind)
    except Exception as exc:  # noqa: BLE001 - a bug must become a denial, never a 500
        _log.exception("validating a %s failed unexpectedly", kind)
        return _deny(uid, f"klt could not validate this {kind}: {exc}", code=500, reason="")


def _validate(request: Mapping[str, Any], uid: str, kind: str) -> dict[str, Any]:
    operation = request.get("operation")
    if operation not in _VALIDATED_OPERATIONS:
        return admission_response(uid, allowed=True)
    obj = request.get("object")
    if not isinstance(obj, Mapping):
        return _deny(uid, f"the {operation} request carries no object to validate")
    entry = api.by_kind(kind)
    if obj.get("kind", kind) != kind:
        return _deny(uid, f"this endpoint validates {kind} objects, not {obj.get('kind')!r}")
    if isinstance(obj.get("apiVersion"), str) and obj["apiVersion"] != entry.api_version:
        try:
            obj = conversion.convert({**obj, "kind": kind}, entry.api_version)
        except conversion.ConversionError as exc:
            return _deny(uid, str(exc))
    violations = validation.validate(kind, obj)
    if not violations:
        return admission_response(uid, allowed=True)
    metadata = obj.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    if not isinstance(name, str) or not name:
        name = metadata.get("generateName", "") if isinstance(metadata, Mapping) else ""
    message = validation.describe(kind, entry.group, str(name), violations)
    return _deny(uid, message, code=422, reason="Invalid")


# --- conversion --------------------------------------------------------------------------------


def _conversion_response(uid: str, objects: list[Any], error: str | None) -> dict[str, Any]:
    result: dict[str, Any] = (
        {"status": "Success"} if error is None else {"status": "Failure", "message": error}
    )
    return {
        "apiVersion": CONVERSION_API_VERSION,
        "kind": "ConversionReview",
        "response": {
            "uid": uid,
            "convertedObjects": objects if error is None else [],
            "result": result,
        },
    }


def conversion_review(review: Any) -> dict[str, Any]:
    """Answer a ConversionReview: every object converted, or a ``Failure`` saying why not.

    The apiserver needs all objects or none, so one object that cannot be converted fails the
    whole review (and with it the request that needed the conversion).

    Raises:
        BadReview: when the body has no request uid to answer.
    """
    request, uid = _request(review, "ConversionReview")
    desired = request.get("desiredAPIVersion")
    if not isinstance(desired, str) or not desired:
        return _conversion_response(uid, [], "the request names no desiredAPIVersion")
    objects = request.get("objects")
    if objects is None:
        objects = []
    if not isinstance(objects, list):
        return _conversion_response(uid, [], "request.objects must be a list")
    converted: list[Any] = []
    for index, obj in enumerate(objects):
        try:
            converted.append(conversion.convert(obj, desired))
        except conversion.ConversionError as exc:
            return _conversion_response(uid, [], f"objects[{index}]: {exc}")
        except Exception as exc:  # noqa: BLE001 - a bug must become a Failure, never a 500
            _log.exception("converting objects[%d] to %s failed unexpectedly", index, desired)
            return _conversion_response(uid, [], f"objects[{index}]: klt could not convert: {exc}")
    return _conversion_response(uid, converted, None)
