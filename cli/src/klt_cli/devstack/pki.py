"""The dev stack's certificates, keys and tokens, made once per state dir.

One local CA signs every serving certificate (kube-apiserver, controller
manager, scheduler, and later the klt admission webhook), so clients verify TLS
for real and a webhook's caBundle is just this CA.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
LEAF_DAYS = 825
# Leaves are reissued when this close to expiry, so a long-lived dev machine
# never meets an expired certificate.
RENEW_BEFORE = dt.timedelta(days=30)

LOCAL_NAMES = ("localhost",)
LOCAL_IPS = ("127.0.0.1", "::1")
# 10.0.0.1 is the `kubernetes` service's ClusterIP in 10.0.0.0/24.
APISERVER_NAMES = (
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
APISERVER_IPS = ("10.0.0.1",)
FRONT_PROXY_USER = "front-proxy-client"


@dataclass(frozen=True)
class Pki:
    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def sa_key(self) -> Path:
        return self.directory / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.directory / "sa.pub"

    @property
    def token_file(self) -> Path:
        return self.directory / "tokens.csv"

    def cert(self, name: str) -> Path:
        return self.directory / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.directory / f"{name}.key"

    def ca_bundle_b64(self) -> str:
        """The CA as a webhook `caBundle` / kubeconfig `certificate-authority-data`."""
        return base64.b64encode(self.ca_cert.read_bytes()).decode()

    def admin_token(self) -> str:
        return self.token_file.read_text().split(",", 1)[0].strip()

    def ensure(self) -> None:
        """Create whatever is missing; keep what exists, so restarts reuse identities."""
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        if not (self.ca_cert.is_file() and self.ca_key.is_file()):
            _write_ca(self)
        if not (self.sa_key.is_file() and self.sa_pub.is_file()):
            _write_sa_keys(self)
        if not self.token_file.is_file():
            # apiserver token file format: token,user,uid,"group1,group2"
            token = secrets.token_urlsafe(32)
            _write_private(self.token_file, f'{token},klt-admin,klt-admin,"system:masters"\n')
        self.issue_serving_cert(
            "apiserver", [*LOCAL_NAMES, *APISERVER_NAMES], [*LOCAL_IPS, *APISERVER_IPS]
        )
        self.issue_serving_cert("kube-controller-manager", list(LOCAL_NAMES), list(LOCAL_IPS))
        self.issue_serving_cert("kube-scheduler", list(LOCAL_NAMES), list(LOCAL_IPS))
        # The aggregation layer's client identity. Without a requestheader CA the
        # controller manager and scheduler log a CA-bundle error every few seconds.
        self.issue_client_cert("front-proxy-client", FRONT_PROXY_USER)

    def issue_serving_cert(
        self, name: str, dns_names: list[str], ip_addresses: list[str]
    ) -> tuple[Path, Path]:
        """Sign a serving certificate with the dev CA; returns (cert, key) paths.

        Idempotent: an existing, unexpired certificate with the same names is kept.
        The klt webhook uses this with ("localhost", "127.0.0.1") because the
        apiserver calls it at https://127.0.0.1:<port>.
        """
        return self._issue(name, name, [], dns_names, ip_addresses, ExtendedKeyUsageOID.SERVER_AUTH)

    def issue_client_cert(
        self, name: str, common_name: str, organizations: list[str] | None = None
    ) -> tuple[Path, Path]:
        """Sign a client certificate (CN = user, O = groups) with the dev CA."""
        return self._issue(
            name, common_name, organizations or [], [], [], ExtendedKeyUsageOID.CLIENT_AUTH
        )

    def _issue(
        self,
        name: str,
        common_name: str,
        organizations: list[str],
        dns_names: list[str],
        ip_addresses: list[str],
        usage: x509.ObjectIdentifier,
    ) -> tuple[Path, Path]:
        cert_path, key_path = self.cert(name), self.key(name)
        wanted = set(dns_names) | {str(ipaddress.ip_address(i)) for i in ip_addresses}
        if cert_path.is_file() and key_path.is_file() and _still_good(cert_path, wanted):
            return cert_path, key_path
        ca_cert = x509.load_pem_x509_certificate(self.ca_cert.read_bytes())
        ca_key = serialization.load_pem_private_key(self.ca_key.read_bytes(), password=None)
        if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
            raise TypeError(f"{self.ca_key} is not the EC key this module writes")
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        subject = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
        subject.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(subject))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=LEAF_DAYS))
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
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if wanted:
            sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
            sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ip_addresses]
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        _write_private(key_path, _key_pem(key))
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cert_path, key_path


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_private(path: Path, data: str | bytes) -> None:
    raw = data.encode() if isinstance(data, str) else data
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(raw)


def _still_good(cert_path: Path, wanted: set[str]) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except ValueError:
        return False
    have: set[str] = set()
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        pass
    else:
        have |= set(san.get_values_for_type(x509.DNSName))
        have |= {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    fresh = cert.not_valid_after_utc - dt.datetime.now(dt.UTC) > RENEW_BEFORE
    return fresh and wanted <= have


def _write_ca(pki: Pki) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "klt-dev-ca")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
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
    _write_private(pki.ca_key, _key_pem(key))
    pki.ca_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    # A new CA invalidates every leaf it did not sign.
    for leaf in pki.directory.glob("*.crt"):
        if leaf != pki.ca_cert:
            leaf.unlink()


def _write_sa_keys(pki: Pki) -> None:
    # RSA because every service-account token consumer understands RS256.
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_private(pki.sa_key, _key_pem(key))
    pki.sa_pub.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
