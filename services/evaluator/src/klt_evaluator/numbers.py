"""Numbers as providers and Keptn's status fields write them. Pure functions, no I/O.

Metric values travel as strings (``KeptnMetric.status.value``), written by whichever provider
fetched them, so reading and writing them has to agree with Go's conventions:

- Prometheus answers with ``strconv.FormatFloat(v, 'f', -1, 64)``: the shortest digits that
  round-trip, never an exponent (``1000000``, ``0.00015``), and ``NaN``, ``+Inf``, ``-Inf``.
  :func:`format_plain` writes that form; klt uses it for every value it computes itself.
- Keptn's Dynatrace and DQL providers wrote ``fmt.Sprintf("%f")`` (six decimals):
  :func:`format_fixed6`. Its Datadog provider wrote ``strconv.FormatFloat(v, 'g', 5, 64)``:
  :func:`format_g5`.
- Go's ``strconv.ParseFloat`` reads decimal numbers with an optional exponent and the words
  ``inf``/``infinity``/``nan`` in any case. :func:`parse_number` reads the same (no hex floats,
  no underscores), so a value Keptn wrote is read back identically.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

_NUMBER = re.compile(
    r"[+-]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|inf(?:inity)?|nan)", re.IGNORECASE
)


def parse_number(text: str) -> float:
    """Parse a number the way Go's ``strconv.ParseFloat`` does (decimal form only).

    Surrounding whitespace is ignored. NaN and infinities are returned as such; callers that
    need a finite number check :func:`math.isfinite` and say so in their own words.

    Raises:
        ValueError: ``text`` is not a number.
    """
    stripped = text.strip()
    if not _NUMBER.fullmatch(stripped):
        raise ValueError(f"{text!r} is not a number")
    return float(stripped)


def _non_finite(value: float) -> str | None:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return None


def format_plain(value: float) -> str:
    """Shortest round-tripping decimal without an exponent (Go ``FormatFloat(v, 'f', -1)``)."""
    special = _non_finite(value)
    if special is not None:
        return special
    if value == 0:
        return "0" if math.copysign(1.0, value) > 0 else "-0"
    text = format(Decimal(repr(value)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def format_fixed6(value: float) -> str:
    """Six decimals (Go ``fmt.Sprintf("%f", v)``)."""
    return _non_finite(value) or f"{value:f}"


def format_g5(value: float) -> str:
    """Five significant digits, exponent when large or small (Go ``FormatFloat(v, 'g', 5)``)."""
    return _non_finite(value) or format(value, ".5g")


def describe_non_finite(value: float) -> str | None:
    """``"NaN"``, ``"+Inf"`` or ``"-Inf"`` for a value no comparison can use, else None."""
    return _non_finite(value)
