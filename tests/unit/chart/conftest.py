"""Fixtures of the chart tests: the helm binary and one render per value set (cached)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from chart_kit import VALUE_SETS, Rendered, helm_binary, render


@pytest.fixture(scope="session")
def helm_bin() -> Path:
    found = helm_binary()
    if found is None:
        pytest.skip("helm is not installed: `uv run klt dev build` builds it into the stack's bin")
    return found


@pytest.fixture(scope="session")
def rendered_sets(helm_bin: Path) -> Callable[[str], Rendered]:
    """Renders a named value set once per session."""
    cache: dict[str, Rendered] = {}

    def get(name: str) -> Rendered:
        if name not in cache:
            cache[name] = render(helm_bin, VALUE_SETS[name])
        return cache[name]

    return get


@pytest.fixture(params=sorted(VALUE_SETS))
def value_set(request: pytest.FixtureRequest) -> str:
    return str(request.param)
