"""The HTTPS admission server and certificate rotation, on localhost without a cluster.

- the server only listens once a certificate is loaded, and answers malformed bodies with 400;
- loading a new certificate into the live context changes what new connections see;
- the certificate manager publishes a new CA bundle before it serves a certificate of that CA,
  keeps the old certificate when the bundle cannot be published, and reloads mounted files.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from prometheus_client import CollectorRegistry

from klt_webhook import certs
from klt_webhook.server import AdmissionServer, admission_routes
from klt_webhook.settings import AdmissionSettings, CertSettings
from klt_webhook.tls import CertificateManager, FileCertificates, TlsState

NAMES = certs.serving_names("klt-webhook", "klt-system", extra_ips=["127.0.0.1"])


def _issue(
    data: dict[str, bytes] | None = None, names: certs.ServingNames = NAMES
) -> certs.ServingCertificate:
    serving, _ = certs.renew(
        data or {},
        names=names,
        now=dt.datetime.now(dt.UTC),
        ca_validity=dt.timedelta(days=2),
        cert_validity=dt.timedelta(days=1),
        renew_before=dt.timedelta(hours=1),
    )
    return serving


def _data(serving: certs.ServingCertificate) -> dict[str, bytes]:
    return certs.decode_secret_data(certs.encode_secret_data(serving))


async def _served_serial(port: int, bundle: bytes) -> int:
    context = ssl.create_default_context(cadata=bundle.decode())
    _, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="127.0.0.1"
    )
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    await writer.wait_closed()
    return x509.load_der_x509_certificate(der).serial_number


@pytest.fixture
async def running() -> AsyncIterator[tuple[AdmissionServer, TlsState, certs.ServingCertificate]]:
    tls = TlsState()
    server = AdmissionServer(
        AdmissionSettings(host="127.0.0.1", port=0, max_body_bytes=64 * 1024),
        tls,
        admission_routes(CollectorRegistry(), mutate_pod=None),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(server.serve(stop))
    await asyncio.sleep(0.05)
    assert not server.started.is_set(), "no listening before a certificate is loaded"
    serving = _issue()
    tls.load(serving)
    await asyncio.wait_for(server.wait_started(), 5)
    yield server, tls, serving
    stop.set()
    await task


async def test_malformed_bodies_get_400_and_reviews_get_answers(
    running: tuple[AdmissionServer, TlsState, certs.ServingCertificate],
) -> None:
    server, _, serving = running
    context = ssl.create_default_context(cadata=serving.ca_pem.decode())
    base = f"https://127.0.0.1:{server.port}"
    async with aiohttp.ClientSession() as session:
        for path in ("/convert", "/validate-metrics-keptn-sh-v1-analysis"):
            for body, status in ((b"", 400), (b"{x", 400), (b"[]", 400), (b"{}", 400)):
                async with session.post(base + path, data=body, ssl=context) as response:
                    assert response.status == status, (path, body)
                    assert (await response.text()).strip()
        review = {
            "kind": "AdmissionReview",
            "request": {
                "uid": "1",
                "operation": "CREATE",
                "object": {"kind": "Analysis", "metadata": {"name": "a"}, "spec": {}},
            },
        }
        async with session.post(
            base + "/validate-metrics-keptn-sh-v1-analysis", json=review, ssl=context
        ) as response:
            assert response.status == 200
            answer = await response.json()
        assert answer["response"]["allowed"] is False
        assert "spec.timeframe: is required" in answer["response"]["status"]["message"]
        async with session.post(base + "/convert", data=b"[" * 200_000, ssl=context) as response:
            assert response.status == 413
        async with session.post(base + "/mutate-v1-pod", json=review, ssl=context) as response:
            assert response.status == 404, "no pod route without a mutator"


async def test_a_loaded_certificate_is_served_to_new_connections_without_restart(
    running: tuple[AdmissionServer, TlsState, certs.ServingCertificate],
) -> None:
    server, tls, first = running
    assert server.port is not None
    assert await _served_serial(server.port, first.ca_pem) == first.serial
    second = _issue(_data(first), certs.serving_names("klt-webhook", "x", extra_ips=["127.0.0.1"]))
    assert second.ca_pem == first.ca_pem
    tls.load(second)
    assert await _served_serial(server.port, first.ca_pem) == second.serial


def test_a_mismatched_pair_is_refused_and_the_old_one_kept() -> None:
    tls = TlsState()
    good = _issue()
    tls.load(good)
    other = _issue()
    broken = certs.ServingCertificate(cert_pem=good.cert_pem, key_pem=other.key_pem, ca_pem=b"")
    with pytest.raises(ssl.SSLError):
        tls.load(broken)
    assert tls.current is good


class _Source:
    def __init__(self, serving: certs.ServingCertificate) -> None:
        self.serving = serving

    async def fetch(self, now: dt.datetime) -> certs.ServingCertificate:
        return self.serving


def _manager(
    source: _Source, tls: TlsState, published: list[bytes], *, fail: bool = False
) -> CertificateManager:
    async def publish(bundle: bytes) -> None:
        if fail:
            raise RuntimeError("apiserver unavailable")
        published.append(bundle)
        # The certificate must not change before the bundle is out.
        assert tls.current is None or tls.current.ca_pem in bundle or bundle

    return CertificateManager(
        source,
        tls,
        CertSettings(propagation_seconds=0.01),
        publish_bundle=publish,
        registry=CollectorRegistry(),
    )


async def test_the_manager_publishes_a_new_ca_before_serving_its_certificate() -> None:
    tls = TlsState()
    first = _issue()
    source = _Source(first)
    published: list[bytes] = []
    manager = _manager(source, tls, published)
    assert await manager.refresh()
    assert tls.current is first
    assert published == [first.ca_bundle(dt.datetime.now(dt.UTC))]
    assert not await manager.refresh(), "nothing changed"
    assert len(published) == 1

    same_ca = _issue(_data(first), certs.serving_names("klt-webhook", "y"))
    source.serving = same_ca
    assert await manager.refresh()
    assert tls.current is same_ca
    assert len(published) == 1, "same CA, same bundle: nothing to publish"

    new_ca = _issue()  # a fresh CA, with the previous one kept as old
    rotated = certs.ServingCertificate(
        cert_pem=new_ca.cert_pem,
        key_pem=new_ca.key_pem,
        ca_pem=new_ca.ca_pem,
        old_ca_pem=first.ca_pem,
    )
    source.serving = rotated
    order: list[str] = []
    original_load = tls.load

    def load(serving: certs.ServingCertificate) -> None:
        order.append("load")
        original_load(serving)

    tls.load = load  # type: ignore[method-assign]
    manager._publish = lambda bundle: _record(order, published, bundle)  # type: ignore[method-assign]
    assert await manager.refresh()
    assert order == ["publish", "load"]
    assert first.ca_pem.strip() in published[-1]
    assert new_ca.ca_pem.strip() in published[-1]


async def _record(order: list[str], published: list[bytes], bundle: bytes) -> None:
    order.append("publish")
    published.append(bundle)


async def test_the_manager_keeps_the_certificate_when_the_bundle_cannot_be_published() -> None:
    tls = TlsState()
    first = _issue()
    manager = _manager(_Source(first), tls, [])
    await manager.refresh()
    failing = _manager(_Source(_issue()), tls, [], fail=True)
    failing.bundle = manager.bundle
    with pytest.raises(RuntimeError):
        await failing.refresh()
    assert tls.current is first


async def test_mounted_files_are_reloaded_when_they_change(tmp_path: Path) -> None:
    first = _issue()
    for name, value in ((certs.TLS_CERT, first.cert_pem), (certs.TLS_KEY, first.key_pem)):
        (tmp_path / name).write_bytes(value)
    (tmp_path / certs.CA_CERT).write_bytes(first.ca_pem)
    tls = TlsState()
    published: list[bytes] = []
    manager = CertificateManager(
        FileCertificates(tmp_path),
        tls,
        CertSettings(mode="files", cert_dir=str(tmp_path), propagation_seconds=0),
        publish_bundle=lambda bundle: _record([], published, bundle),
        registry=CollectorRegistry(),
    )
    assert await manager.refresh()
    assert tls.current is not None
    assert tls.current.serial == first.serial
    second = _issue(_data(first), certs.serving_names("klt-webhook", "z"))
    (tmp_path / certs.TLS_CERT).write_bytes(second.cert_pem)
    (tmp_path / certs.TLS_KEY).write_bytes(second.key_pem)
    assert await manager.refresh()
    assert tls.current.serial == second.serial
    assert len(published) == 1


async def test_missing_files_say_which_are_needed(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"tls\.crt and tls\.key are required"):
        await FileCertificates(tmp_path).fetch(dt.datetime.now(dt.UTC))
