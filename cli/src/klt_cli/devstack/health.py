"""Health probes for the stack's processes, with nothing but the standard library.

The CLI may not import aiokafka or kubernetes_asyncio (import-linter), so the
Kafka probe speaks the wire protocol itself: ApiVersions, then a Metadata
request. That proves the broker serves requests, not just that a port is open.
Every probe has a short timeout and returns (ok, detail) rather than raising.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import struct
from dataclasses import dataclass
from pathlib import Path

PROBE_TIMEOUT = 3.0

API_METADATA = 3
API_VERSIONS = 18
# Versions whose request and response layouts _metadata_request/_parse_metadata
# handle: all non-flexible; v8 adds two authorized-operations flags.
METADATA_VERSIONS = range(4, 9)


@dataclass(frozen=True)
class Broker:
    node_id: int
    host: str
    port: int


@dataclass(frozen=True)
class KafkaMetadata:
    cluster_id: str | None
    controller_id: int
    brokers: tuple[Broker, ...]
    metadata_version: int


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, fmt: str) -> int:
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return int(value)

    def string(self) -> str | None:
        size = self.take(">h")
        if size < 0:
            return None
        raw = self.data[self.pos : self.pos + size]
        self.pos += size
        return raw.decode()


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        chunks += chunk
    return bytes(chunks)


def _call(sock: socket.socket, api_key: int, version: int, corr: int, body: bytes) -> _Reader:
    client_id = b"klt-dev-probe"
    # Request header v1: api_key, api_version, correlation_id, client_id.
    header = struct.pack(">hhih", api_key, version, corr, len(client_id)) + client_id
    payload = header + body
    sock.sendall(struct.pack(">i", len(payload)) + payload)
    (size,) = struct.unpack(">i", _recv_exact(sock, 4))
    reader = _Reader(_recv_exact(sock, size))
    if reader.take(">i") != corr:
        raise ConnectionError("correlation id mismatch")
    return reader


def kafka_metadata(host: str, port: int, timeout: float = PROBE_TIMEOUT) -> KafkaMetadata:
    """Ask the broker which brokers and controller the cluster has."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        # ApiVersions v0 is the one request every broker accepts, and it tells
        # which Metadata versions this broker still speaks (4.0 dropped v0-v3).
        r = _call(sock, API_VERSIONS, 0, 1, b"")
        error = r.take(">h")
        if error != 0:
            raise ConnectionError(f"ApiVersions error code {error}")
        ranges: dict[int, tuple[int, int]] = {}
        for _ in range(r.take(">i")):
            key, lo, hi = r.take(">h"), r.take(">h"), r.take(">h")
            ranges[key] = (lo, hi)
        lo, hi = ranges.get(API_METADATA, (0, -1))
        usable = [v for v in METADATA_VERSIONS if lo <= v <= hi]
        if not usable:
            raise ConnectionError(f"broker speaks Metadata v{lo}-v{hi}, probe knows v4-v8")
        version = max(usable)
        # An empty (not null) topic list: brokers only, no topic scan.
        body = struct.pack(">ib", 0, 0)
        if version >= 8:
            body += struct.pack(">bb", 0, 0)
        r = _call(sock, API_METADATA, version, 2, body)
        r.take(">i")  # throttle_time_ms
        brokers = []
        for _ in range(r.take(">i")):
            node_id = r.take(">i")
            bhost = r.string() or ""
            bport = r.take(">i")
            r.string()  # rack
            brokers.append(Broker(node_id, bhost, bport))
        cluster_id = r.string()
        controller_id = r.take(">i")
        return KafkaMetadata(cluster_id, controller_id, tuple(brokers), version)


def check_kafka(host: str, port: int) -> tuple[bool, str]:
    try:
        meta = kafka_metadata(host, port)
    except (OSError, ConnectionError, struct.error, UnicodeDecodeError) as exc:
        return False, f"metadata request failed: {exc}"
    if not meta.brokers:
        return False, "metadata lists no brokers yet"
    return True, f"cluster {meta.cluster_id}, {len(meta.brokers)} broker(s)"


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    if ca_file is None:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    return ssl.create_default_context(cafile=str(ca_file))


def http_get(
    host: str,
    port: int,
    path: str,
    *,
    tls: ssl.SSLContext | None = None,
    token: str | None = None,
    timeout: float = PROBE_TIMEOUT,
) -> tuple[int, str]:
    """One GET over http.client: unlike urllib it never goes through HTTP(S)_PROXY."""
    conn: http.client.HTTPConnection
    if tls is None:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    else:
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=tls)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read(4096).decode(errors="replace")
    finally:
        conn.close()


def http_get_json(
    host: str, port: int, path: str, *, tls: ssl.SSLContext, token: str, timeout: float = 10.0
) -> object:
    """GET a whole JSON document (http_get reads only the start of a body)."""
    conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=tls)
    try:
        conn.request(
            "GET", path, headers={"Authorization": f"Bearer {token}", "Accept": "application/json"}
        )
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise ConnectionError(f"GET {path}: HTTP {resp.status}")
        return json.loads(body)
    finally:
        conn.close()


def check_http(
    host: str,
    port: int,
    path: str,
    *,
    tls: ssl.SSLContext | None = None,
    token: str | None = None,
    expect: str | None = None,
) -> tuple[bool, str]:
    try:
        status, body = http_get(host, port, path, tls=tls, token=token)
    except (OSError, http.client.HTTPException) as exc:
        return False, f"GET {path}: {exc}"
    if status != 200:
        return False, f"GET {path}: HTTP {status} {body.strip()[:200]}"
    if expect is not None and expect not in body:
        return False, f"GET {path}: unexpected body {body.strip()[:200]}"
    return True, f"GET {path}: 200"


def port_in_use(host: str, port: int) -> bool:
    """Whether something already listens on host:port (bind probe, no connect)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False
