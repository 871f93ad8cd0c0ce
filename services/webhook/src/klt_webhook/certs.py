"""Certificates for the admission server: make, check and renew them. Pure; no I/O.

The self-managed mode follows keptn-cert-manager: an ECDSA P-256 CA (one year) signs an ECDSA
P-256 serving certificate (seven days); either is renewed when less than the renewal margin
(12 h) is left. When the CA is renewed the previous one is kept as ``ca.crt.old`` and stays in
the CA bundle until it expires, so a replica still serving a certificate of the old CA keeps
being trusted while the new bundle propagates.

Everything here takes ``now`` explicitly, so tests move time instead of waiting for it.
Private keys only ever live in :class:`ServingCertificate` values and Secret data: nothing in
this module logs or formats them.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CA_CERT",
    "CA_KEY",
    "OLD_CA_CERT",
    "TLS_CERT",
    "TLS_KEY",
    "ServingCertificate",
    "ServingNames",
    "decode_secret_data",
    "encode_secret_data",
    "from_files",
    "renew",
    "serving_names",
]

# Secret keys, as keptn-cert-manager wrote them (and as cert-manager.io mounts tls.*/ca.crt).
CA_CERT = "ca.crt"
CA_KEY = "ca.key"
OLD_CA_CERT = "ca.crt.old"
TLS_CERT = "tls.crt"
TLS_KEY = "tls.key"

_ORGANIZATION = "klt"
_UNIT = "webhook"
# Certificates start a little in the past so that a host whose clock is slightly behind ours
# (the apiserver's) does not see them as not yet valid.
_BACKDATE = dt.timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class ServingNames:
    """The names a serving certificate must carry."""

    dns: tuple[str, ...]
    ips: tuple[str, ...] = ()

    @property
    def common_name(self) -> str:
        return self.dns[0] if self.dns else (self.ips[0] if self.ips else "klt-webhook")


def serving_names(
    service: str,
    namespace: str,
    *,
    extra_dns: Sequence[str] = (),
    extra_ips: Sequence[str] = (),
) -> ServingNames:
    """``<service>.<namespace>.svc`` (what the apiserver verifies for a Service reference), the
    fully qualified form, and the extra names and addresses from the settings."""
    dns = [f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local"]
    dns.extend(name for name in extra_dns if name not in dns)
    ips = [str(ipaddress.ip_address(ip)) for ip in extra_ips]
    return ServingNames(tuple(dns), tuple(dict.fromkeys(ips)))


@dataclass(frozen=True)
class ServingCertificate:
    """What the admission server serves and what the apiserver must trust.

    ``ca_key_pem`` is only known in self-managed mode. ``old_ca_pem`` is the previous CA after a
    CA renewal; it stays in :meth:`ca_bundle` until it expires.
    """

    cert_pem: bytes
    key_pem: bytes = field(repr=False)
    ca_pem: bytes
    ca_key_pem: bytes | None = field(default=None, repr=False)
    old_ca_pem: bytes | None = None

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)

    @property
    def not_after(self) -> dt.datetime:
        return self.certificate.not_valid_after_utc

    @property
    def serial(self) -> int:
        return self.certificate.serial_number

    @property
    def fingerprint(self) -> str:
        """Identifies the serving certificate and key (a SHA-256 over both, never the key)."""
        return hashlib.sha256(self.cert_pem + b"\0" + self.key_pem).hexdigest()

    def ca_bundle(self, now: dt.datetime) -> bytes:
        """PEM of the CA and, while it is still valid, the previous CA."""
        parts = [self.ca_pem.strip()]
        if self.old_ca_pem:
            old = _load_cert(self.old_ca_pem)
            if old is not None and old.not_valid_after_utc > now and old != _load_cert(self.ca_pem):
                parts.append(self.old_ca_pem.strip())
        return b"\n".join(parts) + b"\n"


def encode_secret_data(certs: ServingCertificate) -> dict[str, str]:
    """The ``data`` of the Secret that shares self-managed certificates between replicas."""
    raw = {CA_CERT: certs.ca_pem, TLS_CERT: certs.cert_pem, TLS_KEY: certs.key_pem}
    if certs.ca_key_pem is not None:
        raw[CA_KEY] = certs.ca_key_pem
    if certs.old_ca_pem is not None:
        raw[OLD_CA_CERT] = certs.old_ca_pem
    return {key: base64.b64encode(value).decode("ascii") for key, value in raw.items()}


def decode_secret_data(data: Mapping[str, object] | None) -> dict[str, bytes]:
    """Base64-decode a Secret's ``data``, skipping values that are not valid base64 text."""
    decoded: dict[str, bytes] = {}
    for key, value in (data or {}).items():
        if not isinstance(value, str):
            continue
        try:
            decoded[key] = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            continue
    return decoded


def _load_cert(pem: bytes | None) -> x509.Certificate | None:
    if not pem:
        return None
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError:
        return None


def _load_key(pem: bytes | None) -> ec.EllipticCurvePrivateKey | None:
    if not pem:
        return None
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        return None
    return key if isinstance(key, ec.EllipticCurvePrivateKey) else None


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORGANIZATION),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, _UNIT),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]),
        ]
    )


def _expiring(cert: x509.Certificate, now: dt.datetime, renew_before: dt.timedelta) -> bool:
    return now >= cert.not_valid_after_utc - renew_before or now < cert.not_valid_before_utc


def _new_ca(
    common_name: str, now: dt.datetime, validity: dt.timedelta
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(f"{common_name} CA")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _new_serving(
    names: ServingNames,
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    now: dt.datetime,
    validity: dt.timedelta,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(name) for name in names.dns]
    sans.extend(x509.IPAddress(ipaddress.ip_address(ip)) for ip in names.ips)
    # A serving certificate must not outlive the CA that signed it.
    not_after = min(now + validity, ca.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(names.common_name))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _has_names(cert: x509.Certificate, names: ServingNames) -> bool:
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    dns = set(sans.get_values_for_type(x509.DNSName))
    ips = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    return set(names.dns) <= dns and set(names.ips) <= ips


def _signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _matches(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> bool:
    return cert.public_key() == key.public_key()


def renew(
    data: Mapping[str, bytes],
    *,
    names: ServingNames,
    now: dt.datetime,
    ca_validity: dt.timedelta,
    cert_validity: dt.timedelta,
    renew_before: dt.timedelta,
) -> tuple[ServingCertificate, bool]:
    """Check the stored certificates and renew what needs it.

    Args:
        data: the decoded Secret data (``ca.crt``, ``ca.key``, ``tls.crt``, ``tls.key`` and
            possibly ``ca.crt.old``); empty or damaged entries count as missing.
        names: the names the serving certificate must carry; a certificate lacking one is
            reissued (the settings changed).
        now: the current time (aware, UTC).

    Returns:
        The certificates to use and whether they differ from ``data`` (and must be stored).
    """
    ca = _load_cert(data.get(CA_CERT))
    ca_key = _load_key(data.get(CA_KEY))
    old_ca_pem = data.get(OLD_CA_CERT) or None
    changed = False
    if ca is None or ca_key is None or not _matches(ca, ca_key) or _expiring(ca, now, renew_before):
        if ca is not None and ca.not_valid_after_utc > now:
            old_ca_pem = _cert_pem(ca)
        ca, ca_key = _new_ca(names.common_name, now, ca_validity)
        changed = True

    cert = _load_cert(data.get(TLS_CERT))
    key = _load_key(data.get(TLS_KEY))
    if (
        changed
        or cert is None
        or key is None
        or not _matches(cert, key)
        or not _signed_by(cert, ca)
        or not _has_names(cert, names)
        or _expiring(cert, now, renew_before)
    ):
        cert, key = _new_serving(names, ca, ca_key, now, cert_validity)
        changed = True

    if not changed:
        # Keep the stored bytes: re-encoding could differ in whitespace and look like a change.
        return (
            ServingCertificate(
                cert_pem=data[TLS_CERT],
                key_pem=data[TLS_KEY],
                ca_pem=data[CA_CERT],
                ca_key_pem=data[CA_KEY],
                old_ca_pem=old_ca_pem,
            ),
            False,
        )
    return (
        ServingCertificate(
            cert_pem=_cert_pem(cert),
            key_pem=_key_pem(key),
            ca_pem=_cert_pem(ca),
            ca_key_pem=_key_pem(ca_key),
            old_ca_pem=old_ca_pem,
        ),
        True,
    )


def from_files(cert_pem: bytes, key_pem: bytes, ca_pem: bytes | None) -> ServingCertificate:
    """Certificates mounted as files (cert-manager.io): checked to parse and to match.

    Without ``ca.crt`` the last certificate of the ``tls.crt`` chain stands in as the CA bundle
    (cert-manager puts the issuer there for CA issuers).

    Raises:
        ValueError: with what is wrong, if the files are not a usable pair.
    """
    cert = _load_cert(cert_pem)
    if cert is None:
        raise ValueError(f"{TLS_CERT} is not a PEM certificate")
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise ValueError(f"{TLS_KEY} is not an unencrypted PEM private key") from None
    if cert.public_key() != key.public_key():
        raise ValueError(f"{TLS_KEY} does not belong to the certificate in {TLS_CERT}")
    if ca_pem and _load_cert(ca_pem) is None:
        raise ValueError(f"{CA_CERT} is not a PEM certificate")
    if not ca_pem:
        chain = x509.load_pem_x509_certificates(cert_pem)
        ca_pem = _cert_pem(chain[-1])
    return ServingCertificate(cert_pem=cert_pem, key_pem=key_pem, ca_pem=ca_pem)
