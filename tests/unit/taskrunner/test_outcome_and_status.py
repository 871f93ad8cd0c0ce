"""Reading Jobs and pods, bounding and redacting log tails, and never moving a status back."""

from __future__ import annotations

import base64
import json

import pytest

from klt_common.structs.api.enums import KeptnState
from klt_task_runner import outcome
from klt_task_runner.runner import advance, class_selector


def _job(*conditions: tuple[str, str, str, str]) -> dict[str, object]:
    return {
        "status": {
            "conditions": [
                {"type": t, "status": s, "reason": r, "message": m} for t, s, r, m in conditions
            ]
        }
    }


def test_job_conditions_give_keptns_outcomes() -> None:
    assert outcome.job_outcome(_job()) is None
    assert outcome.job_outcome(_job(("Suspended", "True", "", ""))) is None
    assert outcome.job_outcome(_job(("Complete", "True", "", ""))) == outcome.Outcome(
        KeptnState.SUCCEEDED
    )
    assert outcome.job_outcome(_job(("SuccessCriteriaMet", "True", "x", ""))) == outcome.Outcome(
        KeptnState.SUCCEEDED
    )
    failed = outcome.job_outcome(
        _job(
            (
                "FailureTarget",
                "True",
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            ),
            (
                "Failed",
                "True",
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            ),
        )
    )
    assert failed == outcome.Outcome(
        KeptnState.FAILED, "BackoffLimitExceeded", "Job has reached the specified backoff limit"
    )
    assert outcome.job_outcome(_job(("Failed", "False", "x", "y"))) is None


def _pod(name: str, created: str, waiting: dict[str, str] | None) -> dict[str, object]:
    state = {"waiting": waiting} if waiting else {"running": {}}
    return {
        "metadata": {"name": name, "creationTimestamp": created},
        "status": {"containerStatuses": [{"name": "c", "state": state}]},
    }


def test_a_pod_that_cannot_start_is_described() -> None:
    stuck = _pod(
        "p2",
        "2026-01-01T00:00:02Z",
        {"reason": "CreateContainerConfigError", "message": 'secret "x" not found'},
    )
    problem = outcome.pod_problem([_pod("p1", "2026-01-01T00:00:01Z", None), stuck])
    assert problem == outcome.PodProblem(
        "CreateContainerConfigError",
        'pod p2 cannot start: CreateContainerConfigError: secret "x" not found',
    )
    assert outcome.pod_problem([_pod("p", "t", {"reason": "ContainerCreating"})]) is None


def test_failed_containers_are_found_in_state_and_last_state() -> None:
    pod = {
        "status": {
            "containerStatuses": [
                {
                    "name": "a",
                    "restartCount": 2,
                    "lastState": {"terminated": {"exitCode": 1, "finishedAt": "t"}},
                },
                {"name": "b", "restartCount": 0, "state": {"terminated": {"exitCode": 0}}},
            ]
        }
    }
    assert outcome.failed_containers(pod) == [("a", 2, "t")]


def test_event_ids_are_stable_per_task_and_outcome() -> None:
    ok = outcome.Outcome(KeptnState.SUCCEEDED)
    failed = outcome.Outcome(KeptnState.FAILED, "DeadlineExceeded", "late")
    assert outcome.finished_event_id("u1", ok) == outcome.finished_event_id("u1", ok)
    assert outcome.finished_event_id("u1", ok) != outcome.finished_event_id("u2", ok)
    assert outcome.finished_event_id("u1", ok) != outcome.finished_event_id("u1", failed)


def test_log_tails_are_bounded_in_lines_and_bytes() -> None:
    text = "".join(f"line {n}\n" for n in range(100))
    assert outcome.tail(text, lines=3, limit_bytes=1000) == "line 97\nline 98\nline 99\n"
    cut = outcome.tail("x" * 10_000 + "\nlast\n", lines=10, limit_bytes=100)
    assert len(cut.encode()) <= 100
    assert cut.endswith("last\n")
    assert len(outcome.tail("é" * 5000, lines=1, limit_bytes=101).encode()) <= 101


def test_secret_values_are_redacted_including_json_members() -> None:
    value = json.dumps({"token": "abc-123-xyz", "user": "admin-user", "n": 1})
    secret = {"data": {"SECURE_DATA": base64.b64encode(value.encode()).decode(), "OTHER": "eA=="}}
    values = outcome.secret_values(secret, ["SECURE_DATA"])
    log = f"sent {value}\ntoken abc-123-xyz for admin-user, id x\n"
    redacted = outcome.redact(log, values)
    assert "abc-123-xyz" not in redacted
    assert "admin-user" not in redacted
    assert "id x" in redacted  # a one-character value is not worth masking
    assert outcome.REDACTED in redacted


@pytest.mark.parametrize(
    ("current", "update", "expected"),
    [
        ({}, {"status": "Progressing", "jobName": "j"}, {"status": "Progressing", "jobName": "j"}),
        ({"status": "Progressing", "jobName": "j"}, {"status": "Pending", "reason": "x"}, None),
        ({"status": "Succeeded"}, {"status": "Failed"}, None),
        ({"status": "Failed", "reason": "r"}, {"status": "Failed", "reason": "other"}, None),
        (
            {"status": "Progressing", "message": "m"},
            {"status": "Progressing", "message": "m"},
            None,
        ),
        (
            {"status": "Progressing", "reason": "CreateContainerConfigError", "message": "m"},
            {"status": "Progressing", "reason": None, "message": None},
            {"status": "Progressing"},
        ),
        (
            {"status": "Progressing", "jobName": "j"},
            {"status": "Succeeded", "endTime": "t"},
            {"status": "Succeeded", "jobName": "j", "endTime": "t"},
        ),
    ],
    ids=["start", "no-regress", "completed-is-final", "final-reason", "no-op", "clear", "finish"],
)
def test_status_only_moves_forward(
    current: dict[str, str], update: dict[str, str | None], expected: dict[str, str] | None
) -> None:
    assert advance(current, update) == expected


def test_runner_classes_select_disjoint_sets_of_tasks() -> None:
    assert class_selector("") == "!klt.dev/runner-class"
    assert class_selector("blue") == "klt.dev/runner-class=blue"
