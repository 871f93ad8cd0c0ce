"""KeptnTaskDefinitions: looking them up, and keeping their function code in ConfigMaps.

Lookup follows Keptn: a task's definition is searched in the task's namespace first, then in
the klt namespace (``ClusterSettings.namespace``, Keptn's "default Keptn namespace"). Both come
from a watch cache of all definitions, so a lookup costs no apiserver call, and a definition that
appears is noticed at once (the runner re-checks the tasks that waited for it).

The task-runner is also the definition controller Keptn had: for ``inline`` code it keeps the
ConfigMap ``keptnfn-<name[:245]>`` (key ``code``, owned by the definition, so it goes when the
definition goes) and records the function's ConfigMap in ``status.function.configMap`` (the
generated one, or the ``configMapRef`` once that ConfigMap exists). Its ConfigMaps carry
``app.kubernetes.io/managed-by: klt-task-runner`` and are watched under that label, so checking
that one is current costs no call either.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

from klt_common.clients import cluster as k8s
from klt_common.structs.api import lifecycle
from klt_task_runner import jobspec

_log = logging.getLogger(__name__)

Body = dict[str, Any]

DEFINITIONS = k8s.keptn_resource("KeptnTaskDefinition")


def _digest(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


class DefinitionStore:
    """Definitions by name, and the ConfigMaps of their inline code."""

    def __init__(self, client: k8s.ClusterClient, klt_namespace: str) -> None:
        self.client = client
        self.klt_namespace = klt_namespace
        self.cache = k8s.WatchCache(client, DEFINITIONS)
        self.code_maps = k8s.WatchCache(
            client,
            k8s.CONFIGMAPS,
            label_selector=f"{jobspec.LABEL_MANAGED_BY}={jobspec.MANAGED_BY}",
        )
        # (namespace, name) -> digest of the code last written; covers the moment between our
        # write and the watch event that brings it into ``code_maps``.
        self._written: dict[tuple[str, str], str] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    @property
    def synced(self) -> bool:
        return self.cache.synced and self.code_maps.synced

    def lookup(self, name: str, namespace: str) -> lifecycle.KeptnTaskDefinition | None:
        """The definition ``name`` for a task in ``namespace`` (then in the klt namespace)."""
        for where in (namespace, self.klt_namespace):
            body = self.cache.get(name, where)
            if body is not None:
                return lifecycle.KeptnTaskDefinition.model_validate(body)
        return None

    def referencing(self, name: str) -> bool:
        """Whether any definition names ``name`` through functionRef (so a change to ``name``
        can matter to tasks of other definitions)."""
        for body in self.cache.values():
            spec = body.get("spec") or {}
            for runtime in ("deno", "python"):
                ref = ((spec.get(runtime) or {}).get("functionRef") or {}).get("name")
                if ref == name:
                    return True
        return False

    async def ensure_code(self, definition: lifecycle.KeptnTaskDefinition) -> str | None:
        """Make sure the ConfigMap of the definition's inline code exists and is current.

        Returns its name, or None when the definition has no inline code. Idempotent and cheap
        when nothing changed (a cache lookup).
        """
        runtime = jobspec.runtime_of(definition)
        if runtime is jobspec.Runtime.CONTAINER:
            return None
        spec = definition.spec.deno if runtime is jobspec.Runtime.DENO else definition.spec.python
        if spec is None or spec.inline is None or not spec.inline.code:
            return None
        meta = definition.metadata
        namespace = meta.namespace or ""
        name = jobspec.function_configmap_name(meta.name or "")
        code = spec.inline.code
        digest = _digest(code)
        key = (namespace, name)
        if self._current(key, code, digest):
            return name
        async with self._locks.setdefault(key, asyncio.Lock()):
            if self._current(key, code, digest):
                return name
            owner = {
                "apiVersion": lifecycle.API_VERSION,
                "kind": "KeptnTaskDefinition",
                "name": meta.name,
                "uid": meta.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
            await write_configmap(self.client, namespace, name, code, owner_references=[owner])
            self._written[key] = digest
        return name

    def _current(self, key: tuple[str, str], code: str, digest: str) -> bool:
        if self._written.get(key) == digest:
            return True
        body = self.code_maps.get(key[1], key[0])
        return body is not None and (body.get("data") or {}).get(jobspec.CODE_KEY) == code

    async def reconcile(self, key: tuple[str, str]) -> None:
        """Bring one definition's code ConfigMap and ``status.function.configMap`` up to date."""
        namespace, name = key
        body = self.cache.get(name, namespace)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            return
        definition = lifecycle.KeptnTaskDefinition.model_validate(body)
        try:
            runtime = jobspec.runtime_of(definition)
        except jobspec.DefinitionError:
            return  # reported on the tasks that use it
        if runtime is jobspec.Runtime.CONTAINER:
            return
        spec = definition.spec.deno if runtime is jobspec.Runtime.DENO else definition.spec.python
        assert spec is not None
        config_map = await self.ensure_code(definition)
        if config_map is None and spec.config_map_ref is not None and spec.config_map_ref.name:
            # Keptn records a referenced ConfigMap only once it exists.
            ref = spec.config_map_ref.name
            if await self.client.get_or_none(k8s.CONFIGMAPS, ref, namespace) is not None:
                config_map = ref
        recorded = ((body.get("status") or {}).get("function") or {}).get("configMap")
        if config_map is not None and recorded != config_map:
            await self.client.patch_status(
                DEFINITIONS, name, {"function": {"configMap": config_map}}, namespace
            )


async def write_configmap(
    client: k8s.ClusterClient,
    namespace: str,
    name: str,
    code: str,
    *,
    owner_references: list[Body],
) -> None:
    """Create or update a function-code ConfigMap (key ``code``)."""
    body: Body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {jobspec.LABEL_MANAGED_BY: jobspec.MANAGED_BY},
            "ownerReferences": owner_references,
        },
        "data": {jobspec.CODE_KEY: code},
    }
    try:
        await client.create(k8s.CONFIGMAPS, body, namespace)
    except k8s.AlreadyExists:
        pass
    else:
        return

    def mutate(current: Body) -> Body | None:
        meta = current.setdefault("metadata", {})
        labels = meta.setdefault("labels", {})
        if (
            (current.get("data") or {}).get(jobspec.CODE_KEY) == code
            and labels.get(jobspec.LABEL_MANAGED_BY) == jobspec.MANAGED_BY
            and meta.get("ownerReferences") == owner_references
        ):
            return None
        current["data"] = {**(current.get("data") or {}), jobspec.CODE_KEY: code}
        labels[jobspec.LABEL_MANAGED_BY] = jobspec.MANAGED_BY
        meta["ownerReferences"] = owner_references
        return current

    await client.update(k8s.CONFIGMAPS, name, namespace, mutate)
