"""Entry point of the node agent: settings → client → nodes → supervised loops → shutdown."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import ipaddress
import logging
import signal
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from klt_cli.devstack.nodeagent import sandbox as sb
from klt_cli.devstack.nodeagent.agent import NodeAgent
from klt_cli.devstack.nodeagent.settings import NodeAgentSettings
from klt_common.aiokits.tasks import RootTask, run_until_stopped
from klt_common.clients import cluster as k8s
from klt_common.configs.settings import ClusterSettings


def _serving_tls(directory: Path) -> ssl.SSLContext:
    """A self-signed certificate for the logs endpoint; the apiserver does not verify kubelets
    unless --kubelet-certificate-authority is set, which the dev stack leaves unset."""
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "kubelet.crt", directory / "kubelet.key"
    if not cert_path.exists():
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "klt-node-agent")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    ]
                ),
                critical=False,
            )
            .sign(key, hashes.SHA256())
        )
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        key_path.chmod(0o600)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return context


async def _main(settings: NodeAgentSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await asyncio.to_thread(sb.prepare_tools, settings)
    tls = _serving_tls(Path(settings.state_dir) / "pki")
    client = await k8s.ClusterClient.connect(ClusterSettings(kubeconfig=settings.kubeconfig))
    agent = NodeAgent(settings, client)
    try:
        await agent.register()
        roots = [RootTask("heartbeat", lambda: agent.heartbeat(stop))]
        for index, node in enumerate(agent.nodes):
            roots.append(RootTask(f"pods:{node}", functools.partial(agent.watch_pods, node, stop)))
            roots.append(
                RootTask(f"logs:{node}", functools.partial(agent.serve_logs, index, tls, stop))
            )
        await run_until_stopped(roots, stop=stop, stop_timeout=10)
    finally:
        await agent.stop_workers()
        await client.close()


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = NodeAgentSettings()  # required fields come from the environment
    asyncio.run(_main(settings))


if __name__ == "__main__":
    main()
