"""kubectl against the dev stack, for the chart's integration tests."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# Kinds the chart renders that are not namespaced.
CLUSTER_SCOPED = (
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
)


@dataclass(frozen=True)
class Kubectl:
    binary: Path
    kubeconfig: str

    def run(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(
            [str(self.binary), f"--kubeconfig={self.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and out.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{out.stderr}{out.stdout}")
        return out

    def apply(self, docs: Iterable[dict[str, Any]], *, dry_run: bool, manager: str) -> str:
        args = ["apply", "--server-side", f"--field-manager={manager}", "-f", "-"]
        if dry_run:
            args.append("--dry-run=server")
        return self.run(*args, stdin=yaml.safe_dump_all(list(docs))).stdout

    def get_json(self, *args: str) -> dict[str, Any] | None:
        out = self.run("get", *args, "-o", "json", "--show-managed-fields", check=False)
        if out.returncode != 0:
            if "NotFound" in out.stderr or "not found" in out.stderr:
                return None
            raise AssertionError(f"kubectl get {' '.join(args)} failed:\n{out.stderr}")
        loaded = json.loads(out.stdout)
        assert isinstance(loaded, dict)
        return loaded

    def served_groups(self) -> set[str]:
        out = self.run("api-versions").stdout.split()
        return {v.split("/")[0] if "/" in v else "" for v in out}
