"""Small local schemas of the kinds the chart renders whose CRDs the dev stack does not have.

KEDA's ScaledObject (keda.sh/v1alpha1), prometheus-operator's ServiceMonitor
(monitoring.coreos.com/v1) and cert-manager's Certificate and Issuer (cert-manager.io/v1) cannot
be checked by a server-side dry-run here. These pydantic models hold the fields the chart uses,
with the names and types of the upstream CRDs, and forbid everything else: a misspelt or
misplaced field in a template fails validation instead of being dropped by the real operator.
They are a subset of the upstream schemas, so a field the chart starts using must be added here.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ObjectMeta(_Strict):
    name: str = Field(min_length=1, max_length=253)
    namespace: str = Field(min_length=1)
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}


# --- keda.sh/v1alpha1 ScaledObject -----------------------------------------------------------


class ScaleTargetRef(_Strict):
    apiVersion: str = "apps/v1"
    kind: Literal["Deployment"]
    name: str


class AuthenticationRef(_Strict):
    name: str
    kind: Literal["TriggerAuthentication", "ClusterTriggerAuthentication"] = "TriggerAuthentication"


class KafkaTriggerMetadata(_Strict):
    """keda.sh's kafka scaler parameters (all strings in the trigger's metadata)."""

    bootstrapServers: str = Field(min_length=1)
    consumerGroup: str = Field(min_length=1)
    topic: str = Field(min_length=1)
    lagThreshold: str = Field(pattern=r"^[0-9]+$")
    activationLagThreshold: str = Field(default="0", pattern=r"^[0-9]+$")
    offsetResetPolicy: Literal["earliest", "latest"] = "latest"
    allowIdleConsumers: Literal["true", "false"] = "false"


class CpuTriggerMetadata(_Strict):
    value: str = Field(pattern=r"^[0-9]+$")


class KafkaTrigger(_Strict):
    type: Literal["kafka"]
    metadata: KafkaTriggerMetadata
    authenticationRef: AuthenticationRef | None = None


class CpuTrigger(_Strict):
    type: Literal["cpu"]
    metricType: Literal["Utilization", "AverageValue"]
    metadata: CpuTriggerMetadata


class ScaledObjectSpec(_Strict):
    scaleTargetRef: ScaleTargetRef
    minReplicaCount: int = Field(ge=0)
    maxReplicaCount: int = Field(ge=1)
    pollingInterval: int = Field(ge=1)
    cooldownPeriod: int = Field(ge=0)
    triggers: list[KafkaTrigger | CpuTrigger] = Field(min_length=1)


class ScaledObject(_Strict):
    apiVersion: Literal["keda.sh/v1alpha1"]
    kind: Literal["ScaledObject"]
    metadata: ObjectMeta
    spec: ScaledObjectSpec


# --- monitoring.coreos.com/v1 ServiceMonitor ---------------------------------------------------


class LabelSelector(_Strict):
    matchLabels: dict[str, str]


class NamespaceSelector(_Strict):
    matchNames: list[str] = Field(min_length=1)


class Endpoint(_Strict):
    port: str
    path: str = "/metrics"
    scheme: Literal["http", "https"] = "http"
    interval: str = Field(pattern=r"^([0-9]+(ms|s|m|h))+$")
    scrapeTimeout: str = Field(pattern=r"^([0-9]+(ms|s|m|h))+$")


class ServiceMonitorSpec(_Strict):
    selector: LabelSelector
    namespaceSelector: NamespaceSelector
    endpoints: list[Endpoint] = Field(min_length=1)


class ServiceMonitor(_Strict):
    apiVersion: Literal["monitoring.coreos.com/v1"]
    kind: Literal["ServiceMonitor"]
    metadata: ObjectMeta
    spec: ServiceMonitorSpec


# --- cert-manager.io/v1 Certificate, Issuer -----------------------------------------------------


class IssuerRef(_Strict):
    name: str = Field(min_length=1)
    kind: Literal["Issuer", "ClusterIssuer"]
    group: Literal["cert-manager.io"]


class PrivateKey(_Strict):
    algorithm: Literal["RSA", "ECDSA", "Ed25519"]
    size: int
    rotationPolicy: Literal["Never", "Always"] | None = None


Usage = Literal["server auth", "client auth", "digital signature", "key encipherment", "cert sign"]


class CertificateSpec(_Strict):
    secretName: str = Field(min_length=1)
    issuerRef: IssuerRef
    isCA: bool = False
    commonName: str | None = None
    dnsNames: list[str] = []
    duration: str = Field(pattern=r"^([0-9]+(ms|s|m|h))+$")
    renewBefore: str = Field(pattern=r"^([0-9]+(ms|s|m|h))+$")
    privateKey: PrivateKey
    usages: list[Usage] = []


class Certificate(_Strict):
    apiVersion: Literal["cert-manager.io/v1"]
    kind: Literal["Certificate"]
    metadata: ObjectMeta
    spec: CertificateSpec


class CAIssuer(_Strict):
    secretName: str = Field(min_length=1)


class IssuerSpec(_Strict):
    selfSigned: dict[str, Any] | None = None
    ca: CAIssuer | None = None


class Issuer(_Strict):
    apiVersion: Literal["cert-manager.io/v1"]
    kind: Literal["Issuer"]
    metadata: ObjectMeta
    spec: IssuerSpec


MODELS: dict[tuple[str, str], type[BaseModel]] = {
    ("keda.sh/v1alpha1", "ScaledObject"): ScaledObject,
    ("monitoring.coreos.com/v1", "ServiceMonitor"): ServiceMonitor,
    ("cert-manager.io/v1", "Certificate"): Certificate,
    ("cert-manager.io/v1", "Issuer"): Issuer,
}
