"""Keeps the apiserver's view of the webhook current: configurations, conversion, CA bundle.

The registrar writes what :mod:`klt_webhook.registration` builds:

- the Mutating- and ValidatingWebhookConfiguration by server-side apply (field manager
  ``registration.field_manager``), so fields other tools add survive;
- the conversion of every klt CRD that serves more than one version by a merge patch (see
  :func:`klt_webhook.registration.conversion_patch` for why not an apply).

It compares with watch caches of those objects and writes only what differs, so it can run on
every replica and every change event without write storms. It reconciles when the CA bundle
changes (the certificate manager waits for that write before switching certificates), when a
watched object changes (someone re-applied a CRD with the chart's Service reference, say), and
every ``registration.resync_seconds`` regardless. Before a change event or a resync it has the
certificates re-checked, so a replica never writes back a CA bundle another replica has just
replaced (the write that woke it may be exactly that).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from klt_common.aiokits.retry import sleep_or_stop
from klt_common.clients import cluster as k8s
from klt_common.service import ServiceContext
from klt_common.structs import api
from klt_webhook import registration
from klt_webhook.settings import WebhookSettings

__all__ = ["Registrar"]

_log = logging.getLogger(__name__)
_KLT_LABEL = "app.kubernetes.io/part-of=klt"
_SETTLE_SECONDS = 0.5


class Registrar:
    """Registers this webhook with the apiserver and keeps the registration current."""

    def __init__(
        self,
        context: ServiceContext[WebhookSettings],
        *,
        port: Callable[[], int | None],
        mutating: bool,
        recheck_certificates: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self._cluster = context.cluster
        self._settings = context.settings.registration
        self._namespace = context.settings.cluster.namespace
        self._port = port
        self._recheck = recheck_certificates
        self._mutating = mutating and self._settings.mutating
        self._bundle: bytes | None = None
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self.registered = not self._settings.enabled
        self._caches: list[k8s.WatchCache] = []
        self._crds: k8s.WatchCache | None = None
        self._mutating_cache: k8s.WatchCache | None = None
        self._validating_cache: k8s.WatchCache | None = None
        if not self._settings.enabled:
            return
        if self._settings.manage_crd_conversion:
            self._crds = context.watch(
                k8s.WatchCache(self._cluster, k8s.CRDS, label_selector=_KLT_LABEL)
            )
        if self._mutating:
            self._mutating_cache = context.watch(
                k8s.WatchCache(
                    self._cluster,
                    k8s.MUTATING_WEBHOOKS,
                    field_selector=f"metadata.name={self._settings.mutating_name}",
                )
            )
        if self._settings.validating:
            self._validating_cache = context.watch(
                k8s.WatchCache(
                    self._cluster,
                    k8s.VALIDATING_WEBHOOKS,
                    field_selector=f"metadata.name={self._settings.validating_name}",
                )
            )
        self._caches = [
            cache
            for cache in (self._crds, self._mutating_cache, self._validating_cache)
            if cache is not None
        ]

    async def set_ca_bundle(self, bundle: bytes) -> None:
        """Trust ``bundle`` from now on; returns once the apiserver has been told.

        Raises:
            klt_common.clients.cluster.ApiError: if a write failed (the caller keeps its
                current certificate and tries again later).
        """
        self._bundle = bundle
        if self._settings.enabled:
            await self.reconcile()

    # -- desired state ---------------------------------------------------------------------------

    def _desired(self, port: int) -> list[tuple[k8s.Resource, dict[str, Any]]]:
        configs: list[tuple[k8s.Resource, dict[str, Any]]] = []
        if self._mutating:
            configs.append(
                (
                    k8s.MUTATING_WEBHOOKS,
                    registration.mutating_configuration(
                        self._settings,
                        self._namespace,
                        port,
                        self._bundle,
                        operations=self._settings.pod_operations,
                    ),
                )
            )
        if self._settings.validating:
            configs.append(
                (
                    k8s.VALIDATING_WEBHOOKS,
                    registration.validating_configuration(
                        self._settings, self._namespace, port, self._bundle
                    ),
                )
            )
        return configs

    # -- reconcile -------------------------------------------------------------------------------

    async def reconcile(self) -> bool:
        """Write whatever differs from the desired registration; True once all is in place."""
        port = self._port()
        if self._bundle is None or port is None:
            return False
        async with self._lock:
            for resource, desired in self._desired(port):
                await self._apply_configuration(resource, desired)
            if self._crds is not None:
                conversion = registration.crd_conversion(
                    self._settings, self._namespace, port, self._bundle
                )
                for crd in await self._klt_crds():
                    await self._ensure_conversion(crd, conversion)
        if not self.registered:
            _log.info("registered with the apiserver (%s mode)", self._settings.mode)
        self.registered = True
        return True

    def _cache_for(self, resource: k8s.Resource) -> k8s.WatchCache | None:
        if resource is k8s.MUTATING_WEBHOOKS:
            return self._mutating_cache
        if resource is k8s.VALIDATING_WEBHOOKS:
            return self._validating_cache
        return None

    async def _apply_configuration(self, resource: k8s.Resource, desired: dict[str, Any]) -> None:
        name = desired["metadata"]["name"]
        cache = self._cache_for(resource)
        if cache is not None and cache.synced:
            current = cache.get(name)
        else:
            current = await self._cluster.get_or_none(resource, name)
        if current is not None and registration.covers(current, desired):
            return
        await self._cluster.patch(
            resource,
            name,
            desired,
            kind="apply",
            field_manager=self._settings.field_manager,
            force=True,
        )
        _log.info("applied %s %s", resource.kind, name)

    async def _klt_crds(self) -> list[k8s.Body]:
        assert self._crds is not None
        if self._crds.synced:
            return self._crds.values()
        return (await self._cluster.list(k8s.CRDS, label_selector=_KLT_LABEL)).items

    async def _ensure_conversion(self, crd: k8s.Body, desired: dict[str, Any]) -> None:
        spec = crd.get("spec") or {}
        try:
            api.by_plural(str(spec.get("group", "")), str(spec.get("names", {}).get("plural", "")))
        except api.UnknownKindError:
            return
        served = [v for v in spec.get("versions") or [] if v.get("served")]
        if len(served) < 2 or registration.conversion_matches(crd, desired):
            return
        name = crd["metadata"]["name"]
        await self._cluster.patch(
            k8s.CRDS,
            name,
            registration.conversion_patch(desired),
            field_manager=self._settings.field_manager,
        )
        _log.info("pointed the conversion webhook of CRD %s at this webhook", name)

    # -- loop ------------------------------------------------------------------------------------

    async def _forward(self, queue: asyncio.Queue[k8s.WatchEvent], stop: asyncio.Event) -> None:
        stopped = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                getter = asyncio.ensure_future(queue.get())
                await asyncio.wait({getter, stopped}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    await asyncio.gather(getter, return_exceptions=True)
                    return
                self._wake.set()
        finally:
            stopped.cancel()
            await asyncio.gather(stopped, return_exceptions=True)

    async def run(self, stop: asyncio.Event, *, server_started: asyncio.Event) -> None:
        """Register once the server listens and a certificate is known, then keep it so."""
        if not self._settings.enabled:
            await stop.wait()
            return
        forwarders = [
            asyncio.create_task(self._forward(cache.subscribe(), stop), name="registrar-watch")
            for cache in self._caches
        ]
        failures = 0
        try:
            while not server_started.is_set():
                if await sleep_or_stop(0.1, stop):
                    return
            while not stop.is_set():
                self._wake.clear()
                await self._recheck_certificates()
                try:
                    done = await self.reconcile()
                    failures = 0
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - retry; the caches keep us informed
                    failures += 1
                    _log.warning("registering the webhook failed (attempt %d): %s", failures, exc)
                    done = False
                delay = self._settings.resync_seconds if done else min(0.5 * 2**failures, 30.0)
                await self._sleep(delay, stop)
        finally:
            for task in forwarders:
                task.cancel()
            await asyncio.gather(*forwarders, return_exceptions=True)

    async def _recheck_certificates(self) -> None:
        # Another replica may just have renewed the CA and written its bundle (that write is
        # what woke us). Writing our own, older bundle back would make the apiserver distrust
        # the new certificate, so read the shared certificates first; if they changed, the
        # certificate manager hands us the new bundle before we compare.
        if self._recheck is None:
            return
        try:
            await self._recheck()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - reconcile with the bundle we know
            _log.warning("re-checking the certificates before registering failed: %s", exc)

    async def _sleep(self, seconds: float, stop: asyncio.Event) -> None:
        waiters = {
            asyncio.ensure_future(stop.wait()),
            asyncio.ensure_future(self._wake.wait()),
        }
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
        if self._wake.is_set():
            # Our own writes come back as a burst of watch events; let the burst settle so the
            # caches hold every write before the next comparison (else a write is repeated).
            await sleep_or_stop(_SETTLE_SECONDS, stop)
