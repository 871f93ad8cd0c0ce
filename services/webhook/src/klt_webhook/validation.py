"""Validation of Keptn resources beyond what their CRD schemas can say. Pure; no I/O.

These are the rules Keptn's validating webhooks enforced, with Keptn's wording kept at the start
of each message (users search for it) and a hint appended that says what to change:

- KeptnTaskDefinition: exactly one of ``deno``, ``python`` and ``container``;
- KeptnMetric: ``range.interval`` and ``range.step`` are durations, ``step`` and ``aggregation``
  come together, ``aggregation`` is one Keptn knows, ``storedResults`` is at most 255;
- Analysis: ``recent`` or both ``from`` and ``to``, and ``to`` after ``from``;
- AnalysisDefinition: ``warningPercentage`` below ``passPercentage``, exactly one operator in
  each failure/warning block, and ranges whose low bound is below the high bound.

Each validator takes the object as the apiserver sent it (a plain dict at ``v1``) and returns
every violation it finds, never raising: a value of the wrong type is itself a violation.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from klt_common.structs import api

__all__ = [
    "VALIDATORS",
    "Violation",
    "describe",
    "parse_quantity",
    "validate",
]

_AGGREGATIONS = tuple(member.value for member in api.Aggregation)
_MAX_STORED_RESULTS = 255
_OPERATORS = (
    "lessThan",
    "lessThanOrEqual",
    "greaterThan",
    "greaterThanOrEqual",
    "equalTo",
    "inRange",
    "notInRange",
)


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken rule: the JSON path of the offending field and what to do about it."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


Validator = Callable[[Mapping[str, Any]], list[Violation]]


def _mapping(value: Any) -> Mapping[str, Any] | None:
    return value if isinstance(value, Mapping) else None


def _spec(obj: Mapping[str, Any], found: list[Violation]) -> Mapping[str, Any]:
    spec = obj.get("spec")
    if spec is None:
        return {}
    if not isinstance(spec, Mapping):
        found.append(Violation("spec", f"must be an object, not {type(spec).__name__}"))
        return {}
    return spec


# --- KeptnTaskDefinition -----------------------------------------------------------------------


def validate_task_definition(obj: Mapping[str, Any]) -> list[Violation]:
    found: list[Violation] = []
    spec = _spec(obj, found)
    # A key present with null is "not set", as a nil pointer was for Keptn.
    runtimes = [name for name in ("container", "python", "deno") if spec.get(name) is not None]
    if not runtimes:
        found.append(
            Violation(
                "spec",
                "Forbidden! Either Container, Python, or Deno field must be defined: "
                "add spec.deno (or spec.python) with the function, or spec.container with the "
                "image to run",
            )
        )
    elif len(runtimes) > 1:
        found.append(
            Violation(
                "spec",
                "Forbidden! Only one of Container, Python, or Deno field can be defined: "
                f"found spec.{', spec.'.join(runtimes)}; keep exactly one",
            )
        )
    return found


# --- KeptnMetric -------------------------------------------------------------------------------


def _seconds(value: str) -> float | None:
    try:
        return api.parse_duration(value).total_seconds()
    except (ValueError, OverflowError):
        return None


def _duration_problem(value: Any) -> str | None:
    if not isinstance(value, str):
        return f"must be a duration string such as 5m or 1h30m, not {value!r}"
    if _seconds(value) is None:
        return (
            "Forbidden! The time interval cannot be parsed. Please check for suitable "
            f"conventions: {value!r} is not a duration; write it like 30s, 5m or 1h30m"
        )
    return None


def validate_metric(obj: Mapping[str, Any]) -> list[Violation]:
    found: list[Violation] = []
    spec = _spec(obj, found)
    if spec.get("range") is None:
        return found
    rng = _mapping(spec["range"])
    if rng is None:
        return [Violation("spec.range", "must be an object with interval, step and aggregation")]
    # An absent interval is defaulted to 5m by the CRD before admission; only a written one can
    # be wrong.
    if "interval" in rng and (problem := _duration_problem(rng["interval"])):
        found.append(Violation("spec.range.interval", problem))
    step = rng.get("step") or ""
    aggregation = rng.get("aggregation") or ""
    if step and (problem := _duration_problem(step)):
        found.append(Violation("spec.range.step", problem))
    if step and not aggregation:
        found.append(
            Violation(
                "spec.range.aggregation",
                "Forbidden! Aggregation field is required if defining the step field: set "
                f"aggregation to one of {', '.join(_AGGREGATIONS)}, or remove step",
            )
        )
    if aggregation and not step:
        found.append(
            Violation(
                "spec.range.step",
                "Forbidden! Step interval is required for the aggregation to work: set step "
                "(e.g. 1m), or remove aggregation",
            )
        )
    if aggregation and aggregation not in _AGGREGATIONS:
        found.append(
            Violation(
                "spec.range.aggregation",
                f"unsupported aggregation {aggregation!r}: use one of {', '.join(_AGGREGATIONS)}",
            )
        )
    stored = rng.get("storedResults")
    if stored is not None:
        if isinstance(stored, bool) or not isinstance(stored, int):
            found.append(Violation("spec.range.storedResults", "must be an integer"))
        elif not 0 <= stored <= _MAX_STORED_RESULTS:
            found.append(
                Violation(
                    "spec.range.storedResults",
                    f"must be between 0 and {_MAX_STORED_RESULTS}, not {stored}",
                )
            )
    return found


# --- Analysis ----------------------------------------------------------------------------------


def _parse_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)


def validate_analysis(obj: Mapping[str, Any]) -> list[Violation]:
    found: list[Violation] = []
    spec = _spec(obj, found)
    timeframe = _mapping(spec.get("timeframe"))
    if timeframe is None:
        return [*found, Violation("spec.timeframe", "is required: set recent, or from and to")]
    recent = timeframe.get("recent")
    start, end = timeframe.get("from"), timeframe.get("to")
    recent_set = False
    if recent not in (None, ""):
        problem = _duration_problem(recent)
        if problem is not None:
            found.append(Violation("spec.timeframe.recent", problem))
            return found
        # A zero duration counted as unset for Keptn.
        recent_set = _seconds(recent) != 0
    if recent_set:
        if start is not None or end is not None:
            found.append(
                Violation(
                    "spec.timeframe",
                    "the field 'recent' can not be used in conjunction with 'from'/'to': "
                    "remove recent, or remove from and to",
                )
            )
        return found
    if start is None or end is None:
        found.append(
            Violation(
                "spec.timeframe",
                "either 'recent' or both 'from' and 'to'  must be set: add recent "
                "(e.g. 5m) or both timestamps",
            )
        )
        return found
    start_at, end_at = _parse_time(start), _parse_time(end)
    if start_at is None:
        found.append(Violation("spec.timeframe.from", f"{start!r} is not an RFC 3339 timestamp"))
    if end_at is None:
        found.append(Violation("spec.timeframe.to", f"{end!r} is not an RFC 3339 timestamp"))
    if start_at is not None and end_at is not None and not end_at > start_at:
        found.append(
            Violation(
                "spec.timeframe",
                f"value of 'to' must be a timestamp later than 'from': {end} is not after {start}",
            )
        )
    return found


# --- AnalysisDefinition ------------------------------------------------------------------------

_QUANTITY = re.compile(
    r"^([+-]?(?:\d+\.?\d*|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]))?$"
)
_SUFFIXES: dict[str, Decimal] = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}


def parse_quantity(value: Any) -> Decimal:
    """The value of a Kubernetes quantity (``5``, ``"1.5"``, ``"500m"``, ``"2Ki"``, ``"1e3"``).

    Raises:
        ValueError: if ``value`` is a string but not a quantity.
        TypeError: if ``value`` is neither a number nor a string.
    """
    if isinstance(value, bool):
        raise TypeError(f"{value!r} is not a quantity")
    if isinstance(value, int | float):
        number = Decimal(str(value))
        if not number.is_finite():
            raise ValueError(f"{value!r} is not a finite quantity")
        return number
    if not isinstance(value, str):
        raise TypeError(f"{value!r} is not a quantity")
    match = _QUANTITY.match(value.strip())
    if match is None:
        raise ValueError(f"{value!r} is not a quantity")
    digits, exponent, suffix = match.groups()
    try:
        result = Decimal(digits)
        if exponent:
            result = result.scaleb(int(exponent[1:]))
        if suffix:
            result *= _SUFFIXES[suffix]
    except (ArithmeticError, ValueError):
        raise ValueError(f"{value!r} is not a quantity") from None
    if not result.is_finite():
        raise ValueError(f"{value!r} is not a finite quantity")
    return result


def _check_range(path: str, value: Any, found: list[Violation]) -> None:
    rng = _mapping(value)
    if rng is None:
        found.append(Violation(path, "must be an object with lowBound and highBound"))
        return
    bounds: dict[str, Decimal] = {}
    for name in ("lowBound", "highBound"):
        try:
            bounds[name] = parse_quantity(rng.get(name))
        except (ValueError, TypeError):
            problem = f"must be a quantity such as 5 or 0.5, not {rng.get(name)!r}"
            found.append(Violation(f"{path}.{name}", problem))
    if len(bounds) == 2 and bounds["lowBound"] >= bounds["highBound"]:
        found.append(
            Violation(
                path,
                "RangeValue: lower bound of the range needs to be smaller than higher bound: "
                f"lowBound {rng.get('lowBound')} is not below highBound {rng.get('highBound')}",
            )
        )


def _check_operator(path: str, value: Any, found: list[Violation]) -> None:
    operator = _mapping(value)
    if operator is None:
        found.append(Violation(path, "must be an object with exactly one operator"))
        return
    present = [name for name in _OPERATORS if operator.get(name) is not None]
    if not present:
        found.append(
            Violation(path, f"Operator: no operator set: add one of {', '.join(_OPERATORS)}")
        )
        return
    if len(present) > 1:
        found.append(
            Violation(
                path,
                f"Operator: multiple operators can not be set: found {', '.join(present)}; "
                "keep exactly one (use a second objective for another limit)",
            )
        )
        return
    (name,) = present
    if name in ("inRange", "notInRange"):
        _check_range(f"{path}.{name}", operator[name], found)


def validate_analysis_definition(obj: Mapping[str, Any]) -> list[Violation]:
    found: list[Violation] = []
    spec = _spec(obj, found)
    objectives = spec.get("objectives")
    if objectives is not None and not isinstance(objectives, list):
        found.append(Violation("spec.objectives", "must be a list"))
        objectives = None
    for index, objective in enumerate(objectives or []):
        item = _mapping(objective)
        if item is None:
            found.append(Violation(f"spec.objectives[{index}]", "must be an object"))
            continue
        target = item.get("target")
        if target is None:
            continue
        target_map = _mapping(target)
        if target_map is None:
            found.append(Violation(f"spec.objectives[{index}].target", "must be an object"))
            continue
        for block in ("failure", "warning"):
            if target_map.get(block) is not None:
                path = f"spec.objectives[{index}].target.{block}"
                _check_operator(path, target_map[block], found)
    score = _mapping(spec.get("totalScore"))
    if score is not None:
        passing = _number(score.get("passPercentage"))
        warning = _number(score.get("warningPercentage"))
        if passing is not None and warning is not None and warning >= passing:
            found.append(
                Violation(
                    "spec.totalScore",
                    "warn percentage score cannot be higher or equal than Pass percentage score: "
                    f"warningPercentage {score.get('warningPercentage')} must be below "
                    f"passPercentage {score.get('passPercentage')}",
                )
            )
    return found


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


# --- dispatch ----------------------------------------------------------------------------------

VALIDATORS: dict[str, Validator] = {
    "KeptnTaskDefinition": validate_task_definition,
    "KeptnMetric": validate_metric,
    "Analysis": validate_analysis,
    "AnalysisDefinition": validate_analysis_definition,
}


def validate(kind: str, obj: Mapping[str, Any]) -> list[Violation]:
    """Every violation of the rules for ``kind``; kinds without rules have none."""
    validator = VALIDATORS.get(kind)
    return [] if validator is None else validator(obj)


def describe(kind: str, group: str, name: str, violations: list[Violation]) -> str:
    """One message in the apiserver's ``Invalid`` style, listing every violation."""
    details = "; ".join(str(v) for v in violations)
    return f'{kind}.{group} "{name}" is invalid: {details}'
