"""``klt test``: every check the project gates on, in one command.

CI calls exactly this (through ``.ci/run``), so it must work on a fresh machine: it builds the
local stack when it is missing, runs the static checks (ruff, mypy --strict, import-linter, CRD
drift) and then the whole pytest suite, unit and integration. Static checks do not stop the
run early: a developer sees every failure at once, and the exit code is non-zero if any failed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from klt_cli.devstack import stack as devstack

SOURCE_DIRS = [
    "libs/common/src",
    "cli/src",
    "services/webhook/src",
    "services/app-aggregator/src",
    "services/task-runner/src",
    "services/evaluator/src",
    "services/scheduler/src",
]


@dataclass(frozen=True)
class Step:
    name: str
    argv: list[str]


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def static_steps() -> list[Step]:
    return [
        Step("ruff format", [_bin("ruff"), "format", "--check", "."]),
        Step("ruff check", [_bin("ruff"), "check", "."]),
        Step("mypy --strict", [_bin("mypy"), *SOURCE_DIRS]),
        Step("import-linter", [_bin("lint-imports")]),
        Step(
            "CRDs match the models",
            [sys.executable, "-m", "klt_common.structs.crdgen", "--check", "--out", "deploy/crds"],
        ),
    ]


def _run(step: Step, root: Path, env: dict[str, str]) -> bool:
    started = time.monotonic()
    print(f"==> {step.name}", flush=True)
    code = subprocess.call(step.argv, cwd=root, env=env)
    elapsed = time.monotonic() - started
    print(f"<== {step.name}: {'ok' if code == 0 else f'FAILED ({code})'} in {elapsed:.1f}s")
    return code == 0


def run(root: Path, pytest_args: list[str], *, static: bool = True, stack: bool = True) -> int:
    """Run the checks from the repository root; returns the process exit code."""
    env = dict(os.environ)
    env["KLT_REPO_ROOT"] = str(root)
    failed: list[str] = []
    if stack:
        # Bring the stack up before pytest so that its one-time build shows progress here,
        # rather than silently inside a session fixture.
        print("==> local stack", flush=True)
        info = devstack.ensure_up()
        env.update(info.env())
    if static:
        failed.extend(step.name for step in static_steps() if not _run(step, root, env))
    pytest = Step("pytest", [sys.executable, "-m", "pytest", *pytest_args])
    if not _run(pytest, root, env):
        failed.append("pytest")
    if failed:
        print(f"klt test: failed: {', '.join(failed)}")
        return 1
    print("klt test: all checks passed")
    return 0
