"""Settings of the webhook service.

Besides the template's groups, the webhook has four of its own, each read from the
environment like the rest (``KLT_PODS__EVENT_QUEUE_SIZE``, ``KLT_ADMISSION__PORT``,
``KLT_CERTS__MODE``, ``KLT_REGISTRATION__MODE`` …):

- ``pods``: how pods are admitted and gated;
- ``admission``: the HTTPS server the apiserver calls (separate from the plain-HTTP probe port);
- ``certs``: where its serving certificate comes from and how it is rotated;
- ``registration``: how the webhook configurations and the CRDs' conversion webhooks that point
  at this server are written.
"""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from klt_common.configs.settings import ServiceSettings

DAY = 24 * 3600.0


class _Group(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class AdmissionSettings(_Group):
    """The HTTPS server for AdmissionReview and ConversionReview requests."""

    host: str = "0.0.0.0"  # noqa: S104 - the apiserver calls in from outside the pod
    """Address the admission server binds to."""

    port: int = Field(default=9443, ge=0, le=65535)
    """Port of the admission server; the chart's Service maps 443 to it (as Keptn's 443→9443).
    0 picks a free port (tests)."""

    max_body_bytes: int = 8 * 1024 * 1024
    """Largest request body accepted, in bytes. Objects are at most 1.5 MiB in etcd; a
    ConversionReview of a list can carry many of them, and an UPDATE review carries two."""

    keepalive_seconds: float = 120.0
    """Seconds an idle apiserver connection is kept open. Longer than the apiserver's own idle
    timeout (90 s), so the apiserver always closes an idle connection first: a server closing
    one just as the client sends on it makes that admission call fail (``EOF``). A connection
    made before a certificate rotation stays valid; new ones get the new certificate."""


class PodAdmissionSettings(_Group):
    """How pods are admitted and gated (the mutating endpoint)."""

    event_queue_size: int = 10_000
    """Admitted-pod events waiting to be published. Admission never waits for Kafka: when the
    queue is full (the bus is down for long), events are dropped and counted, and the
    app-aggregator's reconciliation of gated pods picks those workloads up instead."""

    cache_miss_read_timeout: float = 1.0
    """Seconds allowed for one apiserver read when a pod's namespace or parent is not in the
    watch caches yet (a namespace or Deployment created a moment before its first pod). Reads
    only; the admission path never writes to the apiserver."""

    skip_gate_when_prechecks_passed: bool = True
    """Admit new pods of a workload version whose pre-deployment checks already passed without
    a gate (Keptn gates them and releases them up to 10 s later)."""


CertMode = Literal["self-managed", "files"]


class CertSettings(_Group):
    """The serving certificate: self-managed (like keptn-cert-manager) or mounted files."""

    mode: CertMode = "self-managed"
    """``self-managed``: generate a CA and a serving certificate, keep them in the Secret
    ``secret_name`` (shared by every replica) and renew them before they expire. ``files``: read
    ``tls.crt``, ``tls.key`` and ``ca.crt`` from ``cert_dir`` (a cert-manager Secret mounted into
    the pod) and reload them when they change."""

    cert_dir: str = "/tmp/k8s-webhook-server/serving-certs"  # noqa: S108 - the conventional mount
    """Directory of ``tls.crt``, ``tls.key`` and ``ca.crt`` in ``files`` mode; the path
    controller-runtime uses, so charts written for Keptn mount it unchanged."""

    secret_name: str = "klt-certs"  # noqa: S105 - the Secret's name, not a secret
    """Secret (in the klt namespace) holding the self-managed CA and serving certificate.
    Keptn's was ``keptn-certs``; a different name lets both run side by side."""

    ca_validity_seconds: float = Field(default=365 * DAY, gt=0)
    """Lifetime of a self-managed CA: one year, as Keptn's."""

    cert_validity_seconds: float = Field(default=7 * DAY, gt=0)
    """Lifetime of a serving certificate: seven days, as Keptn's. Short, because rotation is
    automatic and a leaked key is then only useful for a week."""

    renew_before_seconds: float = Field(default=12 * 3600.0, gt=0)
    """Renew the CA or the serving certificate when less than this is left (12 h, as Keptn).
    Must be well above ``check_interval_seconds`` so that a renewal is never missed."""

    check_interval_seconds: float = Field(default=60.0, gt=0)
    """How often the Secret (or the files) are checked for renewal or for a certificate another
    replica wrote. One small GET per minute per replica; renewal starts 12 h before expiry, so
    checking more often buys nothing."""

    propagation_seconds: float = Field(default=3.0, ge=0)
    """After a new CA is written into the webhook configurations, wait this long before serving a
    certificate it signed. The apiserver picks configuration changes up through an informer, so
    switching at once could present a certificate it cannot verify yet. The bundle keeps the old
    CA too, so the old certificate stays valid meanwhile."""

    extra_dns_names: tuple[str, ...] = ()
    """DNS names added to the serving certificate besides ``<service>.<namespace>.svc`` and
    ``<service>.<namespace>.svc.cluster.local``."""

    extra_ip_addresses: tuple[str, ...] = ()
    """IP addresses added to the serving certificate, e.g. ``127.0.0.1`` when the apiserver
    calls the webhook by URL on the same host (the dev stack)."""

    @model_validator(mode="after")
    def _renewal_fits(self) -> CertSettings:
        if self.renew_before_seconds >= self.cert_validity_seconds:
            raise ValueError(
                "certs.renew_before_seconds must be smaller than certs.cert_validity_seconds, "
                "or every certificate would be renewed as soon as it is made"
            )
        if self.renew_before_seconds >= self.ca_validity_seconds:
            raise ValueError(
                "certs.renew_before_seconds must be smaller than certs.ca_validity_seconds"
            )
        for address in self.extra_ip_addresses:
            ipaddress.ip_address(address)
        return self


class RegistrationSettings(_Group):
    """The webhook configurations and CRD conversion webhooks that point at this server."""

    enabled: bool = True
    """Write the configurations at all. Off when something else (a chart with cert-manager's CA
    injector, say) owns them completely."""

    mode: Literal["service", "url"] = "service"
    """How the apiserver reaches the webhook: ``service`` (in-cluster: ``service_name`` in the
    klt namespace on ``service_port``) or ``url`` (``https://<url_host>:<port>``: the dev stack,
    where the apiserver runs on the host and no Service is routable)."""

    service_name: str = "klt-webhook"
    """Name of the Service in front of the webhook pods; also names the serving certificate."""

    service_port: int = 443
    """Port of that Service."""

    url_host: str = "127.0.0.1"
    """Host in ``url`` mode; must be in the serving certificate (see ``certs.extra_*``)."""

    url_port: int | None = None
    """Port in ``url`` mode. None uses the admission server's bound port (right unless a proxy
    sits in between)."""

    mutating_name: str = "klt-mutating-webhook"
    """Name of the MutatingWebhookConfiguration for pods."""

    validating_name: str = "klt-validating-webhook"
    """Name of the ValidatingWebhookConfiguration for Keptn resources."""

    mutating: bool = True
    """Serve and register the pod webhook. Tests that exercise only conversion and validation
    turn it off so they never touch pod admission on a shared apiserver (and start none of the
    mutator's watch caches)."""

    validating: bool = True
    """Register the validating webhooks for Keptn resources."""

    pod_operations: tuple[Literal["CREATE", "UPDATE"], ...] = ("CREATE",)
    """Pod operations sent to the mutating webhook. Keptn registered both, but the apiserver never
    lets an UPDATE add a scheduling gate and the mutator admits updates unchanged, so CREATE
    alone spares every pod update an admission call."""

    failure_policy: Literal["Fail", "Ignore"] = "Fail"
    """What the apiserver does when the webhook cannot be reached. ``Fail`` (Keptn's default)
    keeps ungated pods and invalid definitions out; ``Ignore`` keeps the cluster working without
    klt (Keptn #3922/#3923)."""

    timeout_seconds: int = Field(default=5, ge=1, le=30)
    """How long the apiserver waits for one admission call. Keptn set none (10 s); admission is
    served from watch caches, so 5 s is generous and halves the worst-case stall."""

    allowed_namespaces: tuple[str, ...] = ()
    """If set, only these namespaces are sent to the webhooks (``In`` selector)."""

    denied_namespaces: tuple[str, ...] = ()
    """Namespaces never sent to the webhooks (``NotIn``); exclusive with ``allowed_namespaces``.
    kube-system, kube-public and kube-node-lease are always excluded, and the klt
    namespace is excluded from pod admission so the webhook never gates its own pods."""

    manage_crd_conversion: bool = True
    """Point the conversion webhook of every multi-version klt CRD at this server. Only one
    webhook deployment per cluster may do this; tests that run their own webhook beside the
    cluster's turn it off."""

    create_namespace: bool = False
    """Create the klt namespace at start-up if it is missing (the dev stack). In-cluster the
    chart creates it, and the service account need not be allowed to."""

    field_manager: str = "klt-webhook"
    """Field manager of every write to configurations and CRDs, so ``managedFields`` say which
    fields the webhook owns."""

    resync_seconds: float = Field(default=300.0, gt=0)
    """Re-check the configurations at least this often even without a change event."""

    @model_validator(mode="after")
    def _one_selector(self) -> RegistrationSettings:
        if self.allowed_namespaces and self.denied_namespaces:
            raise ValueError(
                "set either registration.allowed_namespaces or registration.denied_namespaces, "
                "not both"
            )
        return self


class WebhookSettings(ServiceSettings):
    """Root settings of one webhook process (``KLT_`` environment variables)."""

    service_name: str = "webhook"
    pods: PodAdmissionSettings = PodAdmissionSettings()
    admission: AdmissionSettings = AdmissionSettings()
    certs: CertSettings = CertSettings()
    registration: RegistrationSettings = RegistrationSettings()
