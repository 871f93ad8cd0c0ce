"""helm is one of the dev stack's artifacts, built like the others (pure: nothing is built).

It comes from the Go module proxy through a wrapper module, with the version ldflag (without
it helm reports "v3.21" and charts' version checks see no patch release), is stamped with its
recipe's fingerprint so a warm `klt dev build` skips it, and lands in the stack's bin dir next
to kubectl.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from klt_cli.devstack import build, versions


def _helm(cache: Path) -> build.Artifact:
    (art,) = [a for a in build.artifacts(cache) if a.name == "helm"]
    return art


def test_helm_is_built_from_the_module_proxy_with_its_version(tmp_path: Path) -> None:
    art = _helm(tmp_path)
    assert art.executables == {"helm": "bin/helm"}
    assert art.outputs == ("bin/helm",)
    assert art.directory == tmp_path / "helm"
    assert f"require helm.sh/helm/v3 v{versions.HELM_VERSION}" in build.helm_go_mod()
    assert build.helm_ldflags() == (
        f"-X helm.sh/helm/v3/internal/version.version=v{versions.HELM_VERSION}"
    )
    assert art.recipe["ldflags"] == build.helm_ldflags()


def test_a_new_helm_version_invalidates_the_stamp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _helm(tmp_path).fingerprint
    monkeypatch.setattr(versions, "HELM_VERSION", "3.99.0")
    assert _helm(tmp_path).fingerprint != before


def test_a_stamped_helm_is_not_rebuilt(tmp_path: Path) -> None:
    art = _helm(tmp_path)
    (art.directory / "bin").mkdir(parents=True)
    (art.directory / "bin" / "helm").write_text("#!/bin/sh\n")
    art.write_stamp(1.0, "built")
    assert "helm" not in build.missing_artifacts(tmp_path)
