"""Self-managed certificates: made like keptn-cert-manager's, renewed before expiry.

Time is passed in, never waited for: each test moves ``now`` to the moment it is about.
"""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from klt_webhook import certs

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
NAMES = certs.serving_names("klt-webhook", "klt-system", extra_ips=["127.0.0.1"])
DAY = dt.timedelta(days=1)
KEPTN = {
    "ca_validity": 365 * DAY,
    "cert_validity": 7 * DAY,
    "renew_before": dt.timedelta(hours=12),
}


def _renew(
    data: dict[str, bytes], now: dt.datetime = NOW, names: certs.ServingNames = NAMES
) -> tuple[certs.ServingCertificate, bool]:
    return certs.renew(data, names=names, now=now, **KEPTN)


def _stored(serving: certs.ServingCertificate) -> dict[str, bytes]:
    return certs.decode_secret_data(certs.encode_secret_data(serving))


def _sans(cert: x509.Certificate) -> tuple[set[str], set[str]]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return (
        set(ext.get_values_for_type(x509.DNSName)),
        {str(ip) for ip in ext.get_values_for_type(x509.IPAddress)},
    )


def test_serving_names_cover_the_service_and_the_extras() -> None:
    names = certs.serving_names(
        "klt-webhook", "ns", extra_dns=["localhost", "klt-webhook.ns.svc"], extra_ips=["::1"]
    )
    assert names.dns == ("klt-webhook.ns.svc", "klt-webhook.ns.svc.cluster.local", "localhost")
    assert names.ips == ("::1",)


def test_a_first_renewal_makes_an_ecdsa_ca_and_a_seven_day_serving_certificate() -> None:
    serving, changed = _renew({})
    assert changed
    ca = x509.load_pem_x509_certificate(serving.ca_pem)
    cert = serving.certificate
    for c in (ca, cert):
        key = c.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        assert key.curve.name == "secp256r1"
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.not_valid_after_utc == NOW + 365 * DAY
    assert cert.not_valid_after_utc == NOW + 7 * DAY
    assert cert.not_valid_before_utc < NOW
    assert cert.issuer == ca.subject
    cert.verify_directly_issued_by(ca)
    assert _sans(cert) == (
        {"klt-webhook.klt-system.svc", "klt-webhook.klt-system.svc.cluster.local"},
        {"127.0.0.1"},
    )
    assert serving.old_ca_pem is None
    assert serving.ca_bundle(NOW) == serving.ca_pem.strip() + b"\n"


def test_valid_certificates_are_kept_byte_for_byte() -> None:
    first, _ = _renew({})
    stored = _stored(first)
    again, changed = _renew(stored, NOW + 6 * DAY)
    assert not changed
    assert again.cert_pem == stored[certs.TLS_CERT]
    assert again.key_pem == stored[certs.TLS_KEY]


def test_the_serving_certificate_is_renewed_twelve_hours_before_expiry() -> None:
    first, _ = _renew({})
    renewed, changed = _renew(_stored(first), NOW + 7 * DAY - dt.timedelta(hours=11))
    assert changed
    assert renewed.ca_pem == first.ca_pem, "the CA is still good"
    assert renewed.serial != first.serial
    assert renewed.old_ca_pem is None


def test_the_ca_is_renewed_near_its_expiry_and_the_old_one_stays_trusted() -> None:
    first, _ = _renew({})
    later = NOW + 365 * DAY - dt.timedelta(hours=6)
    renewed, changed = _renew(_stored(first), later)
    assert changed
    assert renewed.ca_pem != first.ca_pem
    assert renewed.old_ca_pem == first.ca_pem
    bundle = renewed.ca_bundle(later)
    assert first.ca_pem.strip() in bundle
    assert renewed.ca_pem.strip() in bundle
    renewed.certificate.verify_directly_issued_by(x509.load_pem_x509_certificate(renewed.ca_pem))
    # Once the old CA has expired it leaves the bundle.
    assert first.ca_pem.strip() not in renewed.ca_bundle(NOW + 366 * DAY)


def test_a_name_change_reissues_the_serving_certificate_only() -> None:
    first, _ = _renew({})
    names = certs.serving_names("klt-webhook", "klt-system", extra_ips=["10.0.0.5"])
    renewed, changed = _renew(_stored(first), names=names)
    assert changed
    assert renewed.ca_pem == first.ca_pem
    assert "10.0.0.5" in _sans(renewed.certificate)[1]


@pytest.mark.parametrize(
    "damage",
    [
        {certs.TLS_KEY: b"garbage"},
        {certs.TLS_CERT: b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"},
        {certs.CA_KEY: b""},
    ],
    ids=["key", "cert", "ca-key"],
)
def test_damaged_entries_are_replaced(damage: dict[str, bytes]) -> None:
    first, _ = _renew({})
    renewed, changed = _renew({**_stored(first), **damage})
    assert changed
    renewed.certificate.verify_directly_issued_by(x509.load_pem_x509_certificate(renewed.ca_pem))


def test_a_serving_key_that_does_not_match_is_replaced() -> None:
    first, _ = _renew({})
    other, _ = _renew({})
    _, changed = _renew({**_stored(first), certs.TLS_KEY: other.key_pem})
    assert changed


def test_secret_data_round_trips_and_skips_bad_base64() -> None:
    serving, _ = _renew({})
    encoded = certs.encode_secret_data(serving)
    assert set(encoded) == {"ca.crt", "ca.key", "tls.crt", "tls.key"}
    decoded = certs.decode_secret_data({**encoded, "junk": "%%%", "number": 5})
    assert decoded[certs.TLS_CERT] == serving.cert_pem
    assert "junk" not in decoded
    assert "number" not in decoded


def test_the_repr_never_shows_a_private_key() -> None:
    serving, _ = _renew({})
    assert b"PRIVATE" not in repr(serving).encode()
    assert "key_pem" not in repr(serving)


def test_mounted_files_are_checked() -> None:
    serving, _ = _renew({})
    loaded = certs.from_files(serving.cert_pem, serving.key_pem, serving.ca_pem)
    assert loaded.ca_pem == serving.ca_pem
    # Without ca.crt, the chain's last certificate stands in.
    assert certs.from_files(serving.cert_pem, serving.key_pem, None).ca_pem == serving.cert_pem
    other, _ = _renew({})
    with pytest.raises(ValueError, match="does not belong"):
        certs.from_files(serving.cert_pem, other.key_pem, None)
    with pytest.raises(ValueError, match=r"tls\.crt is not a PEM certificate"):
        certs.from_files(b"nope", serving.key_pem, None)
    with pytest.raises(ValueError, match=r"ca\.crt is not a PEM certificate"):
        certs.from_files(serving.cert_pem, serving.key_pem, b"nope")
