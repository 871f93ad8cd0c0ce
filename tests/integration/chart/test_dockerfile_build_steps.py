"""The uv steps of the service Dockerfile install each service, here, without Docker.

Docker is not available, so the build stage is replayed on this machine: its COPY instructions
into a scratch directory standing in for the image's /src (in order, so the first `uv sync`
sees only the manifests, as in the image), its ENV, and its RUN `uv sync` commands, with the
virtualenv in a scratch directory and the local Python in place of the image's. What the
runtime stage would receive is then checked: the service's console script runs its entry
module, the workspace's other services and the dev tools are absent, and the packages are
installed as wheels (no link back to the sources, which the runtime stage does not have).

It needs uv and PyPI or uv's cache (hence integration), not the cluster.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from chart_kit import REPO, SERVICES
from dockerfile_kit import SERVICE_DOCKERFILE, copy_sources, parse

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]


def _replay_build_stage(service: str, root: Path) -> Path:
    *_, build, _runtime = parse(REPO / SERVICE_DOCKERFILE, {"SERVICE": service})
    src, venv = root / "src", root / "venv"
    src.mkdir()
    env = dict(os.environ)
    for name in list(env):
        if name.startswith(("UV_", "VIRTUAL_ENV")):
            env.pop(name)
    uv = shutil.which("uv")
    assert uv is not None
    for keyword, args in build.instructions:
        if keyword == "ENV":
            for word in shlex.split(args):
                name, _, value = word.partition("=")
                env[name] = value
        elif keyword == "COPY":
            sources, from_stage = copy_sources(args)
            if from_stage:
                continue
            destination = shlex.split(args)[-1]
            for source in sources:
                target = src / (source if destination.endswith("/") else destination)
                target.parent.mkdir(parents=True, exist_ok=True)
                if (REPO / source).is_dir():
                    shutil.copytree(
                        REPO / source, target, ignore=shutil.ignore_patterns("__pycache__")
                    )
                else:
                    shutil.copy(REPO / source, target)
        elif keyword == "RUN":
            command = [w for w in shlex.split(args) if not w.startswith("--mount=")]
            if command[:2] == ["ln", "-s"]:
                # The entrypoint's fixed name, with the image's venv path mapped onto this one.
                target, name = (Path(w.replace("/opt/klt/venv", str(venv))) for w in command[2:])
                name.symlink_to(target)
                continue
            assert command[:2] == ["uv", "sync"], f"unexpected RUN {args!r}"
            # The image's paths, mapped onto this machine.
            env["UV_PROJECT_ENVIRONMENT"] = str(venv)
            env["UV_PYTHON"] = sys._base_executable  # type: ignore[attr-defined]
            out = subprocess.run(
                [uv, *command[1:]], cwd=src, env=env, capture_output=True, text=True, timeout=300
            )
            assert out.returncode == 0, f"{' '.join(command)} failed:\n{out.stderr}"
    return venv


@pytest.mark.parametrize("service", SERVICES)
def test_the_build_stage_installs_the_service(service: str, tmp_path: Path) -> None:
    venv = _replay_build_stage(service, tmp_path)
    python = venv / "bin" / "python"
    script = venv / "bin" / f"klt-{service}"
    assert script.is_file(), "the service's console script is installed"
    assert (venv / "bin" / "klt-service").resolve() == script.resolve(), "the ENTRYPOINT is it"
    module = "klt_" + service.replace("-", "_")
    modules = ["klt_" + s.replace("-", "_") for s in SERVICES]
    probe = (
        "import importlib, importlib.util, sys\n"
        f"importlib.import_module('{module}.__main__')\n"
        f"others = [m for m in {modules!r}"
        f" if m != '{module}' and importlib.util.find_spec(m)]\n"
        "dev = [m for m in ('pytest', 'mypy', 'ruff', 'klt_cli') if importlib.util.find_spec(m)]\n"
        f"origin = importlib.util.find_spec('{module}').origin\n"
        "print(others, dev, origin)\n"
        "sys.exit(1 if others or dev else 0)\n"
    )
    out = subprocess.run(
        [str(python), "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, f"stray packages in the image's venv: {out.stdout}{out.stderr}"
    assert str(venv) in out.stdout, "installed into the venv as a wheel, not linked to /src"
