"""Evaluation targets: ``KeptnEvaluationDefinition.spec.objectives[].evaluationTarget``.

Keptn accepts exactly two forms, ``<N`` and ``>N``: the first character is the operator and the
rest must parse as a float. klt accepts those unchanged and, as a documented extension (see
docs/evaluator.md), a few more:

===============  ====================================  =========================
target           holds when the value ``v`` ...        origin
===============  ====================================  =========================
``<N``           ``v < N``                             Keptn
``>N``           ``v > N``                             Keptn
``<=N``          ``v <= N``                            klt
``>=N``          ``v >= N``                            klt
``==N``          ``v == N``                            klt
``!=N``          ``v != N``                            klt
``A..B``         ``A <= v <= B`` (both ends included)  klt
===============  ====================================  =========================

Numbers are decimal with an optional sign and exponent (``-1.5``, ``2e3``); ``inf`` is allowed
as a bound, ``NaN`` is not. Whitespace around operators and numbers is ignored (``"< 10"``,
``" 1 .. 5 "``); Keptn itself rejected ``"< 10"``. Anything else (``=10``, ``>>1``, ``5..1``,
an empty target) is an error whose message says which forms exist.

Pure functions, no I/O.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from klt_evaluator.numbers import parse_number

_NUM = r"[+-]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|inf(?:inity)?)"
_COMPARISON = re.compile(rf"\s*(<=|>=|==|!=|<|>)\s*({_NUM})\s*", re.IGNORECASE)
_RANGE = re.compile(rf"\s*({_NUM})\s*\.\.\s*({_NUM})\s*", re.IGNORECASE)

_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    ">": operator.gt,
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}

SYNTAX_HELP = "expected <N, >N, <=N, >=N, ==N, !=N or A..B (inclusive range)"


class TargetError(ValueError):
    """An evaluation target that cannot be parsed."""


@dataclass(frozen=True)
class Target:
    """A parsed evaluation target."""

    text: str
    """The target as written."""
    op: str
    """One of ``<``, ``>``, ``<=``, ``>=``, ``==``, ``!=`` or ``..`` (a range)."""
    bound: float
    """The number compared with; the low end of a range."""
    high: float | None = None
    """The high end of a range."""
    _compare: Callable[[float, float], bool] | None = field(default=None, repr=False)

    def holds(self, value: float) -> bool:
        """Whether ``value`` meets the target. NaN never does."""
        if math.isnan(value):
            return False
        if self.high is not None:
            return self.bound <= value <= self.high
        assert self._compare is not None
        return self._compare(value, self.bound)


def parse_target(text: str) -> Target:
    """Parse an evaluation target.

    Raises:
        TargetError: the target has none of the accepted forms.
    """
    if match := _COMPARISON.fullmatch(text):
        op, number = match.group(1), match.group(2)
        return Target(text, op, parse_number(number), _compare=_OPERATORS[op])
    if match := _RANGE.fullmatch(text):
        low, high = parse_number(match.group(1)), parse_number(match.group(2))
        if low > high:
            raise TargetError(
                f"invalid evaluation target {text!r}: the range's low end {match.group(1)} "
                f"is above its high end {match.group(2)}"
            )
        return Target(text, "..", low, high)
    raise TargetError(f"invalid evaluation target {text!r}: {SYNTAX_HELP}")
