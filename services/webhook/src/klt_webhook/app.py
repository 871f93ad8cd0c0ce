"""Wiring of the webhook service: what it registers on the service template.

Root tasks, each supervised by the template and stopped in stages:

- ``admission-server``: the HTTPS server (``/mutate-v1-pod``, ``/convert``, ``/validate-…``);
- ``certificates``: keeps a valid serving certificate loaded (self-managed or from files);
- ``registration``: keeps the webhook configurations and CRD conversion pointing at us;
- the pod mutator's publish loop and watch caches (:mod:`klt_webhook.mutate`).

The service is ready when it listens with a certificate, has registered itself, and its caches
are synced.
"""

from __future__ import annotations

import logging

from klt_common.clients import cluster as k8s
from klt_common.service import ServiceContext
from klt_webhook import certs
from klt_webhook.mutate import PodMutator
from klt_webhook.registrar import Registrar
from klt_webhook.server import AdmissionServer, Handler, admission_routes
from klt_webhook.settings import WebhookSettings
from klt_webhook.tls import (
    CertificateManager,
    CertificateSource,
    FileCertificates,
    SecretCertificates,
    TlsState,
)

__all__ = ["setup"]

_log = logging.getLogger(__name__)


def _attach_mutator(context: ServiceContext[WebhookSettings]) -> Handler | None:
    if not context.settings.registration.mutating:
        # Tests that exercise only validation run no pod admission at all.
        return None
    return PodMutator.attach(context).handle


async def _ensure_namespace(cluster: k8s.ClusterClient, name: str) -> None:
    if await cluster.get_or_none(k8s.NAMESPACES, name) is not None:
        return
    try:
        await cluster.create(
            k8s.NAMESPACES,
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
        )
        _log.info("created namespace %s", name)
    except k8s.AlreadyExists:
        pass


def _certificate_source(context: ServiceContext[WebhookSettings]) -> CertificateSource:
    settings = context.settings
    if settings.certs.mode == "files":
        return FileCertificates(settings.certs.cert_dir)
    names = certs.serving_names(
        settings.registration.service_name,
        settings.cluster.namespace,
        extra_dns=settings.certs.extra_dns_names,
        extra_ips=settings.certs.extra_ip_addresses,
    )
    return SecretCertificates(
        context.cluster,
        namespace=settings.cluster.namespace,
        settings=settings.certs,
        names=names,
    )


async def setup(context: ServiceContext[WebhookSettings]) -> None:
    settings = context.settings
    if settings.registration.create_namespace:
        await _ensure_namespace(context.cluster, settings.cluster.namespace)

    mutate_pod = _attach_mutator(context)
    tls = TlsState()
    server = AdmissionServer(
        settings.admission, tls, admission_routes(context.registry, mutate_pod=mutate_pod)
    )
    registrar = Registrar(
        context,
        port=lambda: server.port,
        mutating=mutate_pod is not None,
        recheck_certificates=lambda: manager.refresh(context.stop),
    )
    manager = CertificateManager(
        _certificate_source(context),
        tls,
        settings.certs,
        publish_bundle=registrar.set_ca_bundle,
        registry=context.registry,
    )

    context.loop("admission-server", lambda: server.serve(context.stop))
    context.loop("certificates", lambda: manager.run(context.stop))
    context.loop("registration", lambda: registrar.run(context.stop, server_started=server.started))
    context.readiness.add("certificate", tls.ready.is_set)
    context.readiness.add("admission-server", server.started.is_set)
    context.readiness.add("registered", lambda: registrar.registered)
