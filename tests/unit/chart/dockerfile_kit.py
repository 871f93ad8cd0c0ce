"""Reading Dockerfiles without Docker: stages, instructions, COPY sources.

Shared by tests/unit/chart/test_dockerfiles.py (static checks) and
tests/integration/chart/test_dockerfile_build_steps.py (runs the uv steps).
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for key, args in self.instructions if key == keyword]


SERVICE_DOCKERFILE = "services/Dockerfile"
"""The one Dockerfile of the five service images; the SERVICE build argument picks the image."""


def parse(path: Path, build_args: dict[str, str] | None = None) -> list[Stage]:
    """Stages of a Dockerfile: (instruction, arguments) with continuations joined, and
    ``${NAME}`` replaced by the given build arguments (as ``docker build --build-arg`` would)."""
    build_args = build_args or {}
    text = re.sub(r"\\\n", " ", path.read_text())
    text = re.sub(r"\$\{(\w+)\}", lambda m: build_args.get(m.group(1), m.group(0)), text)
    stages: list[Stage] = []
    args: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "ARG" and not stages:
            arg, _, default = rest.partition("=")
            args[arg] = default
            continue
        if keyword == "FROM":
            words = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), words[0])
            alias = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, alias))
            continue
        assert stages, f"{path}: {keyword} before FROM"
        stages[-1].instructions.append((keyword, rest))
    return stages


def copy_sources(args: str) -> tuple[list[str], bool]:
    """The sources of a COPY, and whether it copies from another stage."""
    words = shlex.split(args)
    from_stage = any(w.startswith("--from=") for w in words)
    plain = [w for w in words if not w.startswith("--")]
    return plain[:-1], from_stage


def exec_form(args: str) -> list[str]:
    assert args.startswith("["), f"use the exec form, not {args!r}"
    parsed = json.loads(args)
    assert isinstance(parsed, list)
    return [str(a) for a in parsed]
