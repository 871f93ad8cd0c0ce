"""How a Job's end is read and reported: conditions, JES's messages, masks and bounds."""

from __future__ import annotations

from typing import Any

import pytest

from klt_task_runner.jobexecutor import execution


def _job(*conditions: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "j"}, "status": {"conditions": list(conditions)}}


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        ([], None),
        ([{"type": "Complete", "status": "True"}], execution.JobResult(True)),
        ([{"type": "Complete", "status": "False"}], None),
        (
            [
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "BackoffLimitExceeded",
                    "message": "M",
                }
            ],
            execution.JobResult(False, "job j failed. Reason: BackoffLimitExceeded, Message: M"),
        ),
        (
            [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}],
            execution.JobResult(False, "job j failed: job deadline exceeded"),
        ),
        (
            [{"type": "Suspended", "status": "True", "reason": "R", "message": "M"}],
            execution.JobResult(False, "job j was suspended. Reason: R, Message: M"),
        ),
        ([{"type": "FailureTarget", "status": "True"}], None),
    ],
)
def test_job_conditions(
    conditions: list[dict[str, Any]], expected: execution.JobResult | None
) -> None:
    assert execution.job_result(_job(*conditions)) == expected


@pytest.mark.parametrize(
    ("seconds", "text"), [(300, "5m0s"), (1006, "16m46s"), (30, "30s"), (3600, "1h0m0s")]
)
def test_durations_print_like_go(seconds: int, text: str) -> None:
    assert execution.go_duration(seconds) == text


def test_reports_use_jes_wording() -> None:
    ok = execution.TaskOutcome("t", True, "", "logs")
    bad = execution.TaskOutcome("t", False, "job j failed", "logs")
    assert ok.report() == "Task 't' finished successfully!\n\nLogs:\nlogs\n\n"
    assert bad.report() == "Task 't' failed: job j failed\n\nLogs: \nlogs"


def test_secret_values_are_masked_longest_first() -> None:
    text = "token=abcd1234 short=abcd line=abcd1234xyz"
    assert execution.mask(text, ["abcd", "abcd1234"]) == "token=*** short=*** line=***xyz"
    assert execution.mask(text, []) == text


def test_logs_keep_their_end_and_say_what_was_cut() -> None:
    text = "".join(f"line {n}\n" for n in range(1000))
    kept = execution.tail(text, 100)
    assert kept.endswith("line 999\n")
    assert kept.startswith("[… ")
    assert execution.tail("short", 100) == "short"


def test_messages_are_bounded_keeping_both_ends() -> None:
    text = "HEAD" + "x" * 10_000 + "TAIL"
    bounded = execution.bound_message(text, 1024)
    assert len(bounded.encode()) <= 1024
    assert bounded.startswith("HEAD")
    assert bounded.endswith("TAIL")
    assert "bytes cut" in bounded
    assert execution.bound_message("small", 1024) == "small"


def test_multi_byte_text_is_cut_on_character_boundaries() -> None:
    assert execution.tail("é" * 100, 11).endswith("é" * 5)
    assert "\ufffd" not in execution.bound_message("é" * 1000, 1024)
