"""The Dockerfiles are consistent with the repository (no Docker here to build them).

Service images (services/Dockerfile with --build-arg SERVICE=<name>, built from the repository
root): for every service, every COPY source exists, every uv workspace member's manifest is
copied (uv resolves the workspace as a whole), the uv steps install the service's own package,
and the runtime stage runs the package's console script as a numeric non-root user without uv
or sources. Runtime images
(runtimes/<name>/Dockerfile, built from their own directory): COPY sources exist, the entrypoint
is executable, the user is numeric and not root, and deno is the dev stack's version.

tests/integration/chart/test_dockerfile_build_steps.py runs the uv steps for real.
"""

from __future__ import annotations

import glob
import os
import re
import shlex
import tomllib
from pathlib import Path

import pytest
from chart_kit import REPO, SERVICES
from dockerfile_kit import SERVICE_DOCKERFILE, copy_sources, exec_form, parse

from klt_cli.devstack import versions


def workspace_members() -> list[Path]:
    root = tomllib.loads((REPO / "pyproject.toml").read_text())
    members: list[Path] = []
    for pattern in root["tool"]["uv"]["workspace"]["members"]:
        members += sorted(Path(p) for p in glob.glob(str(REPO / pattern)))
    return [m.relative_to(REPO) for m in members if (m / "pyproject.toml").is_file()]


def _numeric_non_root(user: str) -> None:
    uid, _, gid = user.partition(":")
    assert uid.isdigit(), f"USER {user}: numeric, so runAsNonRoot can verify it"
    assert int(uid) != 0, f"USER {user}: not root"
    assert gid == "" or int(gid) != 0, f"USER {user}: not the root group"


@pytest.mark.parametrize("service", SERVICES)
def test_service_dockerfile(service: str) -> None:
    path = REPO / SERVICE_DOCKERFILE
    stages = parse(path, {"SERVICE": service})
    *build_stages, runtime = stages
    script = f"klt-{service}"
    project = tomllib.loads((REPO / "services" / service / "pyproject.toml").read_text())
    assert script in project["project"]["scripts"], "the entry point is the package's script"

    copied: list[str] = []
    for stage in stages:
        for args in stage.all("COPY"):
            sources, from_stage = copy_sources(args)
            if from_stage:
                continue
            for source in sources:
                assert (REPO / source).exists(), f"{path}: COPY {source} does not exist"
                copied.append(source)
    for member in workspace_members():
        assert str(member / "pyproject.toml") in copied, f"{path}: copy {member}/pyproject.toml"
    assert "uv.lock" in copied
    assert f"services/{service}/src" in copied
    assert "libs/common/src" in copied

    syncs = [a for s in build_stages for a in s.all("RUN") if "uv sync" in a]
    assert len(syncs) == 2
    for sync in syncs:
        assert "--frozen" in sync
        assert "--no-dev" in sync
        assert f"--package {project['project']['name']}" in sync
    assert "--no-editable" in syncs[-1]

    (link,) = [a for s in build_stages for a in s.all("RUN") if a.startswith("ln -s")]
    _, _, target, name = shlex.split(link)
    assert target == f"/opt/klt/venv/bin/{script}", "the fixed name points at the service's script"
    assert exec_form(runtime.all("ENTRYPOINT")[-1]) == [name]
    assert f'title="{script}"' in " ".join(runtime.all("LABEL"))
    (user,) = runtime.all("USER")
    _numeric_non_root(user)
    runtime_copies = [copy_sources(a) for a in runtime.all("COPY")]
    assert all(from_stage for _, from_stage in runtime_copies), "the runtime copies only a venv"
    assert not [a for a in runtime.all("COPY") if "--from=uv" in a], "no uv at run time"
    assert runtime.base == build_stages[-1].base, "the venv's interpreter path must match"
    assert "PYTHONDONTWRITEBYTECODE=1" in " ".join(runtime.all("ENV"))
    assert "8080" in " ".join(runtime.all("EXPOSE"))
    python = re.search(r"python:(\d+\.\d+)", runtime.base)
    assert python is not None
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert f">={python.group(1)}" in requires, "the image's Python is the workspace's"


def test_one_dockerfile_serves_every_service() -> None:
    assert sorted(p.parent.name for p in (REPO / "services").glob("*/Dockerfile")) == []
    unresolved = {
        args
        for service in SERVICES
        for stage in parse(REPO / SERVICE_DOCKERFILE, {"SERVICE": service})
        for _, args in stage.instructions
        if "${SERVICE}" in args
    }
    assert not unresolved


@pytest.mark.parametrize("runtime", ["deno-runtime", "python-runtime"])
def test_runtime_dockerfile(runtime: str) -> None:
    directory = REPO / "runtimes" / runtime
    (stage,) = parse(directory / "Dockerfile")
    for args in stage.all("COPY"):
        sources, from_stage = copy_sources(args)
        assert not from_stage
        for source in sources:
            assert (directory / source).exists(), f"{runtime}: COPY {source} does not exist"
    entrypoint = exec_form(stage.all("ENTRYPOINT")[-1])
    assert entrypoint == ["/entrypoint.sh"]
    script = directory / "entrypoint.sh"
    assert os.access(script, os.X_OK), f"{script} must be executable"
    assert "--chmod=0755 entrypoint.sh /entrypoint.sh" in " ".join(stage.all("COPY"))
    (user,) = stage.all("USER")
    _numeric_non_root(user)
    for args in stage.all("RUN"):
        if "pip install" not in args:
            continue
        for word in shlex.split(args.split("pip install", 1)[1]):
            if not word.startswith("-"):
                assert "==" in word, f"{runtime}: pin {word}, so a rebuild never changes imports"


def test_deno_runtime_is_the_dev_stacks_deno() -> None:
    (stage,) = parse(REPO / "runtimes" / "deno-runtime" / "Dockerfile")
    assert stage.base == f"denoland/deno:alpine-{versions.DENO_VERSION}"
