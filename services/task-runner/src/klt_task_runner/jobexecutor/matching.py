"""Which actions an event triggers, and JSONPath lookups into events.

Matching follows JES:

- ``events[].name`` is a regular expression *searched* in the event type, not anchored: so
  ``sh.keptn.event.*.triggered`` matches every task's ``.triggered``, and ``.`` is any
  character. An invalid expression matches nothing. (Python's ``re`` stands in for Go's RE2;
  the two agree on the expressions event filters use.)
- With ``jsonpath.property``, the expression is evaluated on the mapped event (``id``,
  ``shkeptncontext``, ``time``, ``source``, ``data``, ``specversion``, ``type``,
  ``gitcommitid``) and the result must be a string equal to ``jsonpath.match``. Numbers and
  booleans therefore never match, not even ``4711`` against ``"4711"``. A path that does not
  resolve means "try the next entry".
- An action matches when any of its ``events`` entries does.

No I/O here.
"""

from __future__ import annotations

import functools
import logging
import re
from typing import Any

from jsonpath_ng import jsonpath
from jsonpath_ng.ext import parser as jsonpath_parser

from klt_task_runner.jobexecutor import config
from klt_task_runner.jobexecutor.cloudevents import KeptnEvent

_log = logging.getLogger(__name__)


class PathError(ValueError):
    """A JSONPath expression that is invalid, or does not resolve in the document."""


@functools.lru_cache(maxsize=512)
def _regex(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern)
    except re.error:
        _log.debug("event name %r is not a valid regular expression; it matches nothing", pattern)
        return None


@functools.lru_cache(maxsize=512)
def _compiled(path: str) -> jsonpath.JSONPath:
    try:
        return jsonpath_parser.parse(path)
    except Exception as exc:  # noqa: BLE001 - the parser raises bare Exceptions for bad input
        raise PathError(f"invalid JSONPath {path!r}: {exc}") from None


def _steps(expression: jsonpath.JSONPath) -> list[jsonpath.JSONPath]:
    if isinstance(expression, jsonpath.Child):
        return [*_steps(expression.left), *_steps(expression.right)]
    return [expression]


def _singular(step: jsonpath.JSONPath) -> bool:
    if isinstance(step, jsonpath.Root | jsonpath.This):
        return True
    if isinstance(step, jsonpath.Fields):
        return len(step.fields) == 1 and step.fields[0] != "*"
    if isinstance(step, jsonpath.Index):
        return len(step.indices) == 1
    return False


def _missing(step: jsonpath.JSONPath) -> str:
    if isinstance(step, jsonpath.Fields):
        return f"unknown key {','.join(step.fields)}"
    if isinstance(step, jsonpath.Index):
        return f"index {','.join(map(str, step.indices))} out of range"
    return f"nothing matches {step}"


def resolve(path: str, document: Any) -> Any:
    """The value of ``path`` in ``document``.

    A path whose every step selects one thing (``$.data.items[0]``) gives that value; one with
    wildcards, slices, filters or recursive descent gives the list of everything selected.

    Raises:
        PathError: the path is invalid, or a step selects nothing (``unknown key <k>``).
    """
    steps = _steps(_compiled(path))
    current: list[Any] = [document]
    singular = True
    for step in steps:
        if isinstance(step, jsonpath.Root):
            current = [document]
            continue
        singular = singular and _singular(step)
        try:
            found = [match.value for value in current for match in step.find(value)]
        except Exception as exc:  # noqa: BLE001 - extension operators raise on odd input
            raise PathError(f"cannot evaluate {path!r}: {exc}") from None
        if not found:
            raise PathError(_missing(step))
        current = found
    if singular and len(current) == 1:
        return current[0]
    return current


def event_matches(entry: config.EventFilter, event_type: str, mapped: dict[str, Any]) -> bool:
    """Whether one ``events`` entry matches an event of ``event_type``."""
    regex = _regex(entry.name)
    if regex is None or regex.search(event_type) is None:
        return False
    if entry.jsonpath is None or not entry.jsonpath.property_:
        return True
    try:
        value = resolve(entry.jsonpath.property_, mapped)
    except PathError as exc:
        _log.debug("jsonpath %r: %s", entry.jsonpath.property_, exc)
        return False
    return isinstance(value, str) and value == entry.jsonpath.match


def action_matches(action: config.Action, event_type: str, mapped: dict[str, Any]) -> bool:
    return any(event_matches(entry, event_type, mapped) for entry in action.events)


def matching_actions(cfg: config.JobConfig, event: KeptnEvent) -> list[tuple[int, config.Action]]:
    """``(index, action)`` of every action the event matches, in configuration order."""
    mapped = event.mapped()
    return [
        (index, action)
        for index, action in enumerate(cfg.actions)
        if action_matches(action, event.type, mapped)
    ]
