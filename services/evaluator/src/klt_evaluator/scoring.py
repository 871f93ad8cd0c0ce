"""Scoring an Analysis: objectives, weights, warnings, key objectives, total score.

The rules are Keptn's (``metrics-operator/controllers/common/analysis``):

1. Each objective's value is compared with its target. ``target.failure`` is checked first:
   when its operator holds, the objective scores 0. Otherwise, when ``target.warning`` holds,
   it scores ``weight / 2``. Otherwise it scores ``weight`` (an objective without a target
   always passes).
2. An objective whose value is missing, not a number, NaN or infinite scores 0.
3. ``maximumScore`` is the sum of the weights, ``totalScore`` the sum of the scores; the
   achieved percentage is ``total / maximum * 100`` (100 when they are equal, 0 when the
   maximum is 0).
4. ``pass`` when the percentage is at least ``passPercentage``, else ``warning`` when it is at
   least ``warningPercentage``.
5. A key objective that scored 0 forces ``pass`` and ``warning`` to false.

Operators: ``lessThan``, ``lessThanOrEqual``, ``greaterThan``, ``greaterThanOrEqual``,
``equalTo`` (a ``fixedValue`` each), ``inRange`` (``lowBound <= v <= highBound``) and
``notInRange`` (``v < lowBound or v > highBound``). Bounds are Kubernetes quantities
(``5``, ``"500m"``, ``"1.5k"``, ``"2Gi"``). A block naming several operators uses the first in
that order, as Keptn's evaluator did (its webhook rejected such blocks).

Pure functions, no I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from klt_common.structs.api.metrics import (
    AnalysisObjective,
    ObjectReference,
    Operator,
    ProviderResult,
    TotalScore,
)
from klt_evaluator.numbers import describe_non_finite, parse_number

_QUANTITY = re.compile(
    r"\s*([+-]?(?:\d+\.?\d*|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E))?\s*"
)
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}


def parse_quantity(value: int | str) -> float:
    """A Kubernetes quantity as a float (``resource.Quantity.AsApproximateFloat64``).

    Raises:
        ValueError: not a quantity.
    """
    if isinstance(value, int):
        return float(value)
    match = _QUANTITY.fullmatch(value)
    if match is None:
        raise ValueError(f"{value!r} is not a quantity")
    number, exponent, suffix = match.groups()
    try:
        amount = Decimal(number)
    except InvalidOperation as exc:  # pragma: no cover - the pattern admits only decimals
        raise ValueError(f"{value!r} is not a quantity") from exc
    if exponent:
        amount *= Decimal(10) ** int(exponent[1:])
    elif suffix in _BINARY:
        amount *= _BINARY[suffix]
    elif suffix:
        amount *= _DECIMAL[suffix]
    return float(amount)


def objective_key(ref: ObjectReference) -> str:
    """Key of an objective's value in ``status.storedValues`` (Keptn's ``ComputeKey``)."""
    return f"{ref.name}-{ref.namespace}" if ref.namespace else ref.name


_OPERATOR_ORDER = (
    "equal_to",
    "less_than_or_equal",
    "less_than",
    "greater_than",
    "greater_than_or_equal",
    "in_range",
    "not_in_range",
)


def operator_holds(op: Operator, value: float) -> bool:
    """Whether ``value`` fulfils the (first) operator of ``op``; False when none is set."""
    for name in _OPERATOR_ORDER:
        spec = getattr(op, name)
        if spec is None:
            continue
        if name in ("in_range", "not_in_range"):
            low, high = parse_quantity(spec.low_bound), parse_quantity(spec.high_bound)
            inside = low <= value <= high
            return inside if name == "in_range" else (value < low or value > high)
        fixed = parse_quantity(spec.fixed_value)
        match name:
            case "equal_to":
                return value == fixed
            case "less_than_or_equal":
                return value <= fixed
            case "less_than":
                return value < fixed
            case "greater_than":
                return value > fixed
            case _:
                return value >= fixed
    return False


@dataclass(frozen=True)
class ObjectiveResult:
    """How one objective scored."""

    objective: AnalysisObjective
    value: float | None
    query: str | None
    score: float
    failed: bool
    """The failure criterion held (or the value was unusable)."""
    warned: bool
    """The warning criterion held."""
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and not self.failed and not self.warned

    def to_json(self) -> dict[str, Any]:
        target = self.objective.target
        result: dict[str, Any] = {
            "failResult": {
                "operator": _dump(target.failure) if target and target.failure else {},
                "fulfilled": self.failed and self.error is None,
            },
            "warnResult": {
                "operator": _dump(target.warning) if target and target.warning else {},
                "fulfilled": self.warned,
            },
            "warning": self.warned,
            "pass": self.passed,
        }
        out: dict[str, Any] = {
            "result": result,
            "objective": _dump(self.objective),
            "value": self.value if self.value is not None else 0.0,
            "score": self.score,
        }
        if self.query:
            out["query"] = self.query
        if self.error:
            out["error"] = self.error
        return out


@dataclass(frozen=True)
class AnalysisResult:
    """The whole verdict, written to ``Analysis.status.raw`` as JSON."""

    objectives: tuple[ObjectiveResult, ...]
    total_score: float
    maximum_score: float
    passed: bool
    warning: bool
    key_objective_failed: bool = field(default=False)

    @property
    def achieved_percentage(self) -> float:
        if self.maximum_score == 0:
            return 0.0
        if self.total_score == self.maximum_score:
            return 100.0
        return self.total_score / self.maximum_score * 100.0

    def to_json(self) -> dict[str, Any]:
        return {
            "objectiveResults": [o.to_json() for o in self.objectives],
            "totalScore": self.total_score,
            "maximumScore": self.maximum_score,
            "pass": self.passed,
            "warning": self.warning,
        }

    def raw(self) -> str:
        return json.dumps(self.to_json(), separators=(",", ":"))


def _dump(model: Any) -> Any:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def score_objective(objective: AnalysisObjective, stored: ProviderResult | None) -> ObjectiveResult:
    """Score one objective from its fetched value (None when nothing was fetched)."""
    key = objective_key(objective.analysis_value_template_ref)
    query = stored.query if stored else None
    if stored is None or stored.value is None or stored.value == "":
        reason = stored.err_msg if stored and stored.err_msg else None
        error = f"required value '{key}' not available" + (f": {reason}" if reason else "")
        return ObjectiveResult(objective, None, query, 0.0, True, False, error)
    try:
        value = parse_number(stored.value)
    except ValueError:
        return ObjectiveResult(
            objective, None, query, 0.0, True, False, f"value {stored.value!r} is not a number"
        )
    if (special := describe_non_finite(value)) is not None:
        return ObjectiveResult(
            objective, None, query, 0.0, True, False, f"value {special} is not a finite number"
        )
    target = objective.target
    try:
        failed = bool(target and target.failure and operator_holds(target.failure, value))
        warned = not failed and bool(
            target and target.warning and operator_holds(target.warning, value)
        )
    except ValueError as exc:
        return ObjectiveResult(objective, value, query, 0.0, True, False, f"invalid target: {exc}")
    weight = float(objective.weight)
    score = 0.0 if failed else weight / 2 if warned else weight
    return ObjectiveResult(objective, value, query, score, failed, warned)


def score_analysis(
    objectives: list[AnalysisObjective] | None,
    values: Mapping[str, ProviderResult],
    total: TotalScore,
) -> AnalysisResult:
    """Score every objective and the analysis as a whole (rules in the module docstring)."""
    results: list[ObjectiveResult] = []
    maximum = 0.0
    achieved = 0.0
    key_failed = False
    for objective in objectives or []:
        result = score_objective(
            objective, values.get(objective_key(objective.analysis_value_template_ref))
        )
        results.append(result)
        maximum += float(objective.weight)
        achieved += result.score
        # Keptn's rule: an objective "failed" when it scored 0, whatever the reason.
        if objective.key_objective and result.score == 0:
            key_failed = True
    outcome = AnalysisResult(tuple(results), achieved, maximum, False, False, key_failed)
    percentage = outcome.achieved_percentage
    passed = percentage >= total.pass_percentage
    warning = not passed and percentage >= total.warning_percentage
    if key_failed:
        passed = warning = False
    return AnalysisResult(tuple(results), achieved, maximum, passed, warning, key_failed)
