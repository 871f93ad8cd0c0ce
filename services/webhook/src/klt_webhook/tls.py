"""The admission server's certificate at run time: where it comes from and how it is rotated.

:class:`TlsState` owns the server's ``ssl.SSLContext``. A rotation loads the new chain into that
same context, which OpenSSL applies to every handshake from then on: no restart, no dropped
connection (established ones finish with the certificate they started with).

:class:`CertificateManager` is the rotation loop. Every ``certs.check_interval_seconds`` it asks
its source for the current certificate:

- :class:`SecretCertificates` (self-managed) reads the shared Secret, renews what is close to
  expiry, and writes it back with the resourceVersion it read, so when two replicas renew at
  once one write wins and the other adopts the winner's certificate on its next read;
- :class:`FileCertificates` reads the files cert-manager mounts (the kubelet swaps them
  atomically).

When the CA bundle changes, the new bundle is published to the webhook configurations and CRDs
first, and only after ``certs.propagation_seconds`` does the server present a certificate of the
new CA; the bundle still holds the old CA, so the certificate being replaced stays trusted
throughout. If the bundle cannot be published, the current certificate is kept (it is renewed
12 h before expiry, so there is time to retry).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import ssl
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge

from klt_common.aiokits.retry import sleep_or_stop
from klt_common.clients import cluster as k8s
from klt_webhook import certs
from klt_webhook.settings import CertSettings

__all__ = [
    "CertificateManager",
    "CertificateSource",
    "FileCertificates",
    "SecretCertificates",
    "TlsState",
]

_log = logging.getLogger(__name__)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class TlsState:
    """The server-side TLS context and the certificate it currently serves."""

    def __init__(self) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.current: certs.ServingCertificate | None = None
        self.ready = asyncio.Event()

    def load(self, serving: certs.ServingCertificate) -> None:
        """Serve ``serving`` from the next handshake on.

        ``load_cert_chain`` only reads files, so the PEMs go through a private temporary
        directory (mode 0700) that is removed at once.

        Raises:
            ssl.SSLError: if the certificate and key do not match; the old ones stay in use.
        """
        with tempfile.TemporaryDirectory(prefix="klt-webhook-tls-") as directory:
            cert_file = Path(directory, "tls.crt")
            key_file = Path(directory, "tls.key")
            cert_file.write_bytes(serving.cert_pem)
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(serving.key_pem)
            self.context.load_cert_chain(cert_file, key_file)
        self.current = serving
        self.ready.set()


class CertificateSource(Protocol):
    """Where the serving certificate comes from."""

    async def fetch(self, now: dt.datetime) -> certs.ServingCertificate:
        """The certificate to serve now; renews it first when the source manages it."""
        ...


class SecretCertificates:
    """Self-managed certificates, shared by all replicas through one Secret."""

    def __init__(
        self,
        cluster: k8s.ClusterClient,
        *,
        namespace: str,
        settings: CertSettings,
        names: certs.ServingNames,
        attempts: int = 3,
    ) -> None:
        self._cluster = cluster
        self._namespace = namespace
        self._settings = settings
        self._names = names
        self._attempts = attempts

    def _body(self, existing: k8s.Body | None, data: dict[str, str]) -> k8s.Body:
        labels = {"app.kubernetes.io/part-of": "klt", "app.kubernetes.io/component": "webhook"}
        metadata: dict[str, object]
        if existing is None:
            metadata = {"name": self._settings.secret_name, "namespace": self._namespace}
        else:
            # Keeping the resourceVersion makes the write fail (409) if another replica wrote
            # first; the loop then reads and adopts theirs.
            metadata = dict(existing.get("metadata") or {})
            labels = {**(existing.get("metadata", {}).get("labels") or {}), **labels}
        metadata["labels"] = labels
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": metadata,
            "type": "Opaque",
            "data": data,
        }

    async def fetch(self, now: dt.datetime) -> certs.ServingCertificate:
        name = self._settings.secret_name
        for _ in range(self._attempts):
            existing = await self._cluster.get_or_none(k8s.SECRETS, name, self._namespace)
            stored = certs.decode_secret_data(existing.get("data") if existing else None)
            serving, changed = certs.renew(
                stored,
                names=self._names,
                now=now,
                ca_validity=dt.timedelta(seconds=self._settings.ca_validity_seconds),
                cert_validity=dt.timedelta(seconds=self._settings.cert_validity_seconds),
                renew_before=dt.timedelta(seconds=self._settings.renew_before_seconds),
            )
            if not changed:
                return serving
            body = self._body(existing, certs.encode_secret_data(serving))
            try:
                if existing is None:
                    await self._cluster.create(k8s.SECRETS, body, self._namespace)
                else:
                    await self._cluster.replace(k8s.SECRETS, body)
            except (k8s.AlreadyExists, k8s.Conflict):
                _log.info("another replica renewed the certificates first; reading theirs")
                continue
            _log.info(
                "stored renewed certificates in Secret %s/%s (serial %x, valid until %s)",
                self._namespace,
                name,
                serving.serial,
                serving.not_after.isoformat(),
            )
            return serving
        raise RuntimeError(
            f"could not store certificates in Secret {self._namespace}/{name}: "
            f"{self._attempts} conflicting writes in a row"
        )


class FileCertificates:
    """Certificates mounted as files (``tls.crt``, ``tls.key``, ``ca.crt``)."""

    def __init__(self, directory: str | Path) -> None:
        self._directory = Path(directory)

    def _read(self) -> certs.ServingCertificate:
        try:
            cert_pem = (self._directory / certs.TLS_CERT).read_bytes()
            key_pem = (self._directory / certs.TLS_KEY).read_bytes()
        except OSError as exc:
            raise FileNotFoundError(
                f"no serving certificate in {self._directory}: {exc.strerror} "
                f"({certs.TLS_CERT} and {certs.TLS_KEY} are required)"
            ) from None
        ca_file = self._directory / certs.CA_CERT
        ca_pem = ca_file.read_bytes() if ca_file.is_file() else None
        return certs.from_files(cert_pem, key_pem, ca_pem)

    async def fetch(self, now: dt.datetime) -> certs.ServingCertificate:
        del now  # the files are what they are; cert-manager renews them
        return await asyncio.to_thread(self._read)


PublishBundle = Callable[[bytes], Awaitable[None]]


class CertificateManager:
    """Keeps :class:`TlsState` serving a valid certificate, and the apiserver trusting it."""

    def __init__(
        self,
        source: CertificateSource,
        tls: TlsState,
        settings: CertSettings,
        *,
        publish_bundle: PublishBundle,
        registry: CollectorRegistry,
        clock: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        self._source = source
        self._tls = tls
        self._settings = settings
        self._publish = publish_bundle
        self._clock = clock
        self.bundle: bytes | None = None
        # The loop and the registrar (on a change event) both refresh; one at a time.
        self._lock = asyncio.Lock()
        self._expiry = Gauge(
            "klt_webhook_certificate_expiry_timestamp_seconds",
            "When the served certificate expires (Unix time).",
            registry=registry,
        )
        self._reloads = Counter(
            "klt_webhook_certificate_reloads",
            "Certificates loaded into the admission server, the first one included.",
            registry=registry,
        )
        self._failures = Counter(
            "klt_webhook_certificate_check_failures",
            "Certificate checks that failed (Secret unreadable, files missing, bundle unwritten).",
            registry=registry,
        )

    async def refresh(self, stop: asyncio.Event | None = None) -> bool:
        """One check: fetch, publish a changed CA bundle, load a changed certificate.

        Returns whether the served certificate changed.
        """
        async with self._lock:
            return await self._refresh(stop)

    async def _refresh(self, stop: asyncio.Event | None) -> bool:
        now = self._clock()
        serving = await self._source.fetch(now)
        bundle = serving.ca_bundle(now)
        current = self._tls.current
        if current is None:
            # Nothing is served yet: serve at once, then tell the apiserver whom to trust.
            self._load(serving)
            await self._publish(bundle)
            self.bundle = bundle
            return True
        if bundle != self.bundle:
            await self._publish(bundle)
            self.bundle = bundle
            if serving.fingerprint != current.fingerprint and self._settings.propagation_seconds:
                # Give the apiserver time to see the new bundle before it meets the new CA.
                await sleep_or_stop(self._settings.propagation_seconds, stop)
        if serving.fingerprint == current.fingerprint:
            return False
        self._load(serving)
        return True

    def _load(self, serving: certs.ServingCertificate) -> None:
        self._tls.load(serving)
        self._reloads.inc()
        self._expiry.set(serving.not_after.timestamp())
        _log.info(
            "serving certificate %x (valid until %s)", serving.serial, serving.not_after.isoformat()
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Check until ``stop`` is set; faster while no certificate is served yet."""
        while not stop.is_set():
            try:
                await self.refresh(stop)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep serving what we have, retry later
                self._failures.inc()
                # The message names the Secret/file and the reason; key material never appears.
                _log.warning("certificate check failed: %s", exc)
            interval = self._settings.check_interval_seconds
            if not self._tls.ready.is_set():
                interval = min(interval, 2.0)
            if await sleep_or_stop(interval, stop):
                return
