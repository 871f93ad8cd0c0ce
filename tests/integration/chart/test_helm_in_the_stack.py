"""`klt dev build` puts helm, at its pinned version, on the PATH `klt dev env` exports."""

from __future__ import annotations

import subprocess
import sys

import pytest

from klt_cli.devstack import versions

pytestmark = [pytest.mark.integration]


def test_helm_is_on_the_dev_env_path_at_the_pinned_version(stack: object) -> None:
    script = 'eval "$("$0" -m klt_cli.main dev env)" && command -v helm && helm version --short'
    out = subprocess.run(
        ["bash", "-c", script, sys.executable],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    path, version = out.stdout.split()
    assert path == str(stack.bin_dir / "helm")  # type: ignore[attr-defined]
    assert version.split("+")[0] == f"v{versions.HELM_VERSION}", version
