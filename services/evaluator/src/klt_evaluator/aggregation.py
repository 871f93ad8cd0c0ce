"""Folding a ranged metric's step values into one value (``spec.range.aggregation``).

The rules are Keptn's (``metrics-operator/controllers/common/aggregation``): ``max``, ``min``,
``avg`` (arithmetic mean), ``median`` (mean of the two middle values for an even count) and the
percentiles ``p90``, ``p95``, ``p99`` by the nearest-rank method: sort, then take the value at
rank ``ceil(n * p / 100)``. The one difference is the empty input: Keptn returned ``0``, which
reads like a real measurement; here it is an error ("no values in query result").

Pure functions, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from klt_common.structs.api.enums import Aggregation

NO_VALUES = "no values in query result"


def percentile(values: Sequence[float], percent: float) -> float:
    """Nearest-rank percentile of ``values`` (which need not be sorted)."""
    if not values:
        raise ValueError(NO_VALUES)
    ordered = sorted(values)
    rank = math.ceil(len(ordered) * percent / 100)
    return ordered[min(max(rank, 1), len(ordered)) - 1]


def median(values: Sequence[float]) -> float:
    if not values:
        raise ValueError(NO_VALUES)
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2 == 0:
        return (ordered[middle - 1] + ordered[middle]) / 2
    return ordered[middle]


def aggregate(values: Sequence[float], method: Aggregation | str) -> float:
    """Fold ``values`` with ``method``.

    Raises:
        ValueError: no values, or an unknown method.
    """
    if not values:
        raise ValueError(NO_VALUES)
    match Aggregation(method):
        case Aggregation.MAX:
            return max(values)
        case Aggregation.MIN:
            return min(values)
        case Aggregation.AVG:
            # fsum is exact, the division rounds once; clamping keeps the mean of equal samples
            # equal to them (three copies of x must not average to x minus one ulp).
            return min(max(math.fsum(values) / len(values), min(values)), max(values))
        case Aggregation.MEDIAN:
            return median(values)
        case Aggregation.P90:
            return percentile(values, 90)
        case Aggregation.P95:
            return percentile(values, 95)
        case Aggregation.P99:
            return percentile(values, 99)
