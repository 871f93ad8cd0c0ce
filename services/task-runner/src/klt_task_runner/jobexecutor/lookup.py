"""Finding the job configuration of an event: ConfigMaps labelled for its project, stage, service.

JES read ``job/config.yaml`` from Keptn's resource service at service, then stage, then project
level. klt keeps the same order with ConfigMaps in ``JobExecutorSettings.config_namespace``:

==========  ============================================================================
level       labels of the ConfigMap (besides ``klt.dev/job-config: "true"``)
==========  ============================================================================
service     ``keptn.sh/project: <p>``, ``keptn.sh/stage: <s>``, ``keptn.sh/service: <v>``
stage       ``keptn.sh/project: <p>``, ``keptn.sh/stage: <s>`` and no service label
project     ``keptn.sh/project: <p>`` and neither stage nor service label
==========  ============================================================================

The most specific level that has a ConfigMap wins; two ConfigMaps at that level are an error
(which one was meant cannot be guessed). The YAML is under the key ``config.yaml``; the other
keys hold the files tasks may ask for (see ``jobspec``). The ConfigMaps are listed live, one
request per event, so a configuration applied just before an event is always seen.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from klt_common.clients import cluster as k8s
from klt_task_runner.jobexecutor.cloudevents import Scope

LABEL_JOB_CONFIG = "klt.dev/job-config"
LABEL_PROJECT = "keptn.sh/project"
LABEL_STAGE = "keptn.sh/stage"
LABEL_SERVICE = "keptn.sh/service"
CONFIG_KEY = "config.yaml"

_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)$")


class ConfigLookupError(ValueError):
    """A configuration exists but cannot be read (ambiguous, or without ``config.yaml``)."""


@dataclass(frozen=True)
class FoundConfig:
    """The ConfigMap that configures an event, and what it holds."""

    name: str
    namespace: str
    level: str
    """``service``, ``stage`` or ``project``."""

    text: str
    data: dict[str, str] = field(default_factory=dict)
    binary_data: dict[str, str] = field(default_factory=dict)

    @property
    def files(self) -> dict[str, str]:
        """Every key a task's ``files`` may name, text and binary."""
        return {**self.data, **self.binary_data}


def _level(labels: dict[str, str], scope: Scope) -> str | None:
    stage, service = labels.get(LABEL_STAGE), labels.get(LABEL_SERVICE)
    if stage == scope.stage and service == scope.service:
        return "service"
    if stage == scope.stage and service is None:
        return "stage"
    if stage is None and service is None:
        return "project"
    return None


async def find(client: k8s.ClusterClient, namespace: str, scope: Scope) -> FoundConfig | None:
    """The configuration for ``scope``, or None when there is none.

    Raises:
        ConfigLookupError: the winning level is ambiguous or its ConfigMap has no ``config.yaml``.
        ApiError: the ConfigMaps could not be listed.
    """
    if not _LABEL_VALUE.match(scope.project):
        return None  # no label can carry it, so no ConfigMap can be meant for it
    listed = await client.list(
        k8s.CONFIGMAPS,
        namespace,
        label_selector=f"{LABEL_JOB_CONFIG}=true,{LABEL_PROJECT}={scope.project}",
    )
    by_level: dict[str, list[k8s.Body]] = {}
    for item in listed.items:
        labels = (item.get("metadata") or {}).get("labels") or {}
        level = _level(labels, scope)
        if level is not None:
            by_level.setdefault(level, []).append(item)
    for level in ("service", "stage", "project"):
        candidates = sorted(by_level.get(level, []), key=lambda cm: cm["metadata"]["name"])
        if not candidates:
            continue
        names = [cm["metadata"]["name"] for cm in candidates]
        if len(candidates) > 1:
            raise ConfigLookupError(
                f"ambiguous job configuration: ConfigMaps {', '.join(names)} in {namespace} "
                f"are all labelled for this {level}"
            )
        chosen = candidates[0]
        data: dict[str, str] = dict(chosen.get("data") or {})
        if CONFIG_KEY not in data:
            raise ConfigLookupError(f"ConfigMap {namespace}/{names[0]} has no key {CONFIG_KEY}")
        return FoundConfig(
            name=names[0],
            namespace=namespace,
            level=level,
            text=data[CONFIG_KEY],
            data=data,
            binary_data=dict(chosen.get("binaryData") or {}),
        )
    return None
