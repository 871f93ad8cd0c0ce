"""Where the dev stack keeps its build cache and its state."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The build cache: compiled binaries and jars, kept across `klt dev down --purge`."""
    override = os.environ.get("KLT_CACHE_DIR")
    return Path(override).expanduser() if override else Path.home() / ".cache" / "klt"


def state_dir() -> Path:
    """The running stack's state: pki, data, logs, pid files, kubeconfig."""
    override = os.environ.get("KLT_STATE_DIR")
    return Path(override).expanduser() if override else Path.home() / ".local" / "state" / "klt"


def bin_dir(cache: Path | None = None) -> Path:
    """The directory `klt dev env` puts first on PATH (kubectl, deno, etcd, kube-*)."""
    return (cache or cache_dir()) / "bin"


def repo_root() -> Path | None:
    """The klt checkout this package runs from, or None for an installed wheel.

    KLT_REPO_ROOT wins so that a wheel install can still point at a checkout.
    """
    override = os.environ.get("KLT_REPO_ROOT")
    if override:
        return Path(override).expanduser().resolve()
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "deploy").is_dir() and (parent / "cli" / "pyproject.toml").is_file():
            return parent
    return None


def crd_dir() -> Path | None:
    root = repo_root()
    return None if root is None else root / "deploy" / "crds"
