"""Fixtures of the chart's integration tests: helm, kubectl against the dev stack, and the
shared helpers of tests/unit/chart (chart_kit, dockerfile_kit), put on sys.path here because the
two directories hold no packages."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

UNIT_CHART = Path(__file__).resolve().parents[2] / "unit" / "chart"
if str(UNIT_CHART) not in sys.path:
    sys.path.insert(0, str(UNIT_CHART))

from chart_kit import helm_binary  # noqa: E402 - needs the path above


@pytest.fixture(scope="session")
def helm_bin(stack: object) -> Path:
    found = helm_binary()
    if found is None:
        found = Path(stack.bin_dir) / "helm"  # type: ignore[attr-defined]
    if not found.exists():
        pytest.skip("helm is not installed: `uv run klt dev build` builds it into the stack's bin")
    return found


@pytest.fixture(scope="session")
def kubectl_bin(stack: object) -> Path:
    return Path(stack.bin_dir) / "kubectl"  # type: ignore[attr-defined]
