"""``lifecycle.keptn.sh/v1``: apps, workloads, their versions, tasks and evaluations.

Field names, optionality and defaults follow Keptn's v1 CRDs so that manifests written for
Keptn load unchanged. Where Keptn's Go struct embedded another struct inline (an AppVersion spec
is an App spec plus an AppContext spec plus a few fields), the Python classes inherit instead.

Two deliberate departures, both read-side only:

- A state written as ``""`` reads as ``Pending``: Keptn's aggregation already treats the two as
  the same, and an empty string must not make a whole object unreadable.
- ``checkType`` on a KeptnTask or KeptnEvaluation spec stays a plain string. Keptn never
  constrained it and users create standalone tasks by hand; compare it with :class:`CheckType`
  members, which are strings.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BeforeValidator, Field

from klt_common.structs.api._base import (
    ApiModel,
    Crd,
    CrdSchema,
    Duration,
    FreeForm,
    KeptnResource,
    Time,
)
from klt_common.structs.api.enums import KeptnState

GROUP = "lifecycle.keptn.sh"
VERSION = "v1"
API_VERSION = f"{GROUP}/{VERSION}"


def _blank_is_pending(value: Any) -> Any:
    return KeptnState.PENDING if value == "" else value


State = Annotated[KeptnState, BeforeValidator(_blank_is_pending)]


# --- shared parts ------------------------------------------------------------------------------


class ItemStatus(ApiModel):
    """Progress of one task or evaluation created for a phase."""

    definition_name: str | None = None
    """Name of the KeptnTaskDefinition or KeptnEvaluationDefinition."""
    status: State = KeptnState.PENDING
    name: str | None = None
    """Name of the KeptnTask or KeptnEvaluation created for the definition."""
    start_time: Time | None = None
    end_time: Time | None = None


class KeptnWorkloadRef(ApiModel):
    """A workload that belongs to an app, at one version."""

    name: str
    version: str


class WorkloadStatus(ApiModel):
    """Overall state of one workload of an app version."""

    workload: KeptnWorkloadRef | None = None
    status: State = KeptnState.PENDING


class ResourceReference(ApiModel):
    """The Deployment/StatefulSet/DaemonSet/ReplicaSet a KeptnWorkload stands for."""

    uid: str
    kind: str
    name: str


class TaskParameters(ApiModel):
    """Plain parameters, handed to the task as the JSON object in ``DATA``."""

    map: dict[str, str] | None = None


class SecureParameters(ApiModel):
    """A Secret whose ``SECURE_DATA`` key is handed to the task as ``SECURE_DATA``."""

    secret: str | None = None


# --- KeptnApp ----------------------------------------------------------------------------------


class KeptnAppSpec(ApiModel):
    """Desired state of a KeptnApp."""

    version: str
    """Version of the application; for discovered apps, derived from its workloads."""
    revision: int = 1
    """Bump to redeploy the same version (for example after a failed pre-deployment check)."""
    workloads: list[KeptnWorkloadRef] | None = None
    """The KeptnWorkloads that make up the app."""


class KeptnAppStatus(ApiModel):
    """Observed state of a KeptnApp."""

    current_version: str | None = None
    """The version being deployed or last deployed."""


class KeptnApp(KeptnResource):
    """A set of workloads released together."""

    API_VERSION: ClassVar[str] = API_VERSION
    api_version: str = API_VERSION
    kind: Literal["KeptnApp"] = "KeptnApp"
    spec: KeptnAppSpec
    status: KeptnAppStatus | None = None


# --- KeptnAppContext ---------------------------------------------------------------------------


class DeploymentTaskSpec(ApiModel):
    """App-level checks; each entry names a definition in the object's or the Keptn namespace."""

    pre_deployment_tasks: list[str] | None = None
    """KeptnTaskDefinitions to run before the app's workloads deploy."""
    post_deployment_tasks: list[str] | None = None
    """KeptnTaskDefinitions to run after all workloads deployed."""
    pre_deployment_evaluations: list[str] | None = None
    """KeptnEvaluationDefinitions that must pass before the app's workloads deploy."""
    post_deployment_evaluations: list[str] | None = None
    """KeptnEvaluationDefinitions evaluated after all workloads deployed."""
    promotion_tasks: list[str] | None = None
    """KeptnTaskDefinitions to run once everything else succeeded (if promotion is enabled)."""


class KeptnAppContextSpec(DeploymentTaskSpec):
    """Checks and context for the KeptnApp of the same name."""

    metadata: dict[str, str] | None = None
    """Key/value context handed to tasks in KEPTN_CONTEXT and added to spans."""
    span_links: list[str] | None = None
    """W3C traceparent strings; the app version's trace links to each of them."""


class KeptnAppContextStatus(ApiModel):
    """Unused."""

    status: str | None = None


class KeptnAppContext(KeptnResource):
    """Pre/post-deployment checks, promotion tasks and metadata for the same-named KeptnApp."""

    API_VERSION: ClassVar[str] = API_VERSION
    api_version: str = API_VERSION
    kind: Literal["KeptnAppContext"] = "KeptnAppContext"
    spec: KeptnAppContextSpec = Field(default_factory=KeptnAppContextSpec)
    status: KeptnAppContextStatus | None = None


# --- KeptnAppVersion ---------------------------------------------------------------------------


class KeptnAppVersionSpec(KeptnAppContextSpec, KeptnAppSpec):
    """A KeptnApp spec merged with its KeptnAppContext at the time the version was created."""

    app_name: str
    """Name of the KeptnApp."""
    previous_version: str | None = None
    """The app version deployed before this one."""
    trace_id: dict[str, str] | None = None
    """Trace context (``traceparent``) of the deployment trace."""


class KeptnAppVersionStatus(ApiModel):
    """Observed progress of one app version through its phases."""

    pre_deployment_status: State = KeptnState.PENDING
    post_deployment_status: State = KeptnState.PENDING
    promotion_status: State = KeptnState.PENDING
    pre_deployment_evaluation_status: State = KeptnState.PENDING
    post_deployment_evaluation_status: State = KeptnState.PENDING
    workload_overall_status: State = KeptnState.PENDING
    """Aggregated state of all workloads of the app (the AppDeploy phase)."""
    workload_status: list[WorkloadStatus] | None = None
    current_phase: str | None = None
    """Short name of the phase being worked on (see :class:`Phase`)."""
    pre_deployment_task_status: list[ItemStatus] | None = None
    post_deployment_task_status: list[ItemStatus] | None = None
    promotion_task_status: list[ItemStatus] | None = None
    pre_deployment_evaluation_task_status: list[ItemStatus] | None = None
    post_deployment_evaluation_task_status: list[ItemStatus] | None = None
    phase_trace_ids: dict[str, dict[str, str]] | None = Field(default=None, alias="phaseTraceIDs")
    """Per phase, the trace context of that phase's span."""
    status: State = KeptnState.PENDING
    """Overall state of the app version."""
    start_time: Time | None = None
    end_time: Time | None = None


class KeptnAppVersion(KeptnResource):
    """One deployment of one version (and revision) of a KeptnApp."""

    API_VERSION: ClassVar[str] = API_VERSION
    api_version: str = API_VERSION
    kind: Literal["KeptnAppVersion"] = "KeptnAppVersion"
    spec: KeptnAppVersionSpec
    status: KeptnAppVersionStatus | None = None


# --- KeptnAppCreationRequest -------------------------------------------------------------------


class KeptnAppCreationRequestSpec(ApiModel):
    """Desired state of a KeptnAppCreationRequest."""

    app_name: str
    """The KeptnApp to create unless a user-defined one of that name exists."""


class KeptnAppCreationRequest(KeptnResource):
    """Asks for a KeptnApp to be discovered from the workloads that name it."""

    API_VERSION: ClassVar[str] = API_VERSION
    api_version: str = API_VERSION
    kind: Literal["KeptnAppCreationRequest"] = "KeptnAppCreationRequest"
    spec: KeptnAppCreationRequestSpec
    status: str | None = None
    """Unused."""


# --- KeptnWorkload / KeptnWorkloadVersion ------------------------------------------------------


class KeptnWorkloadSpec(ApiModel):
    """Desired state of a KeptnWorkload."""

    app: str
    """Name of the KeptnApp the workload belongs to."""
    version: str
    """Version of the workload."""
    pre_deployment_tasks: list[str] | None = None
    """KeptnTaskDefinitions to run before the workload's pods are scheduled."""
    post_deployment_tasks: list[str] | None = None
    """KeptnTaskDefinitions to run after the workload is ready."""
    pre_deployment_evaluations: list[str] | None = None
    """KeptnEvaluationDefinitions that must pass before the workload's pods are scheduled."""
    post_deployment_evaluations: list[str] | None = None
    """KeptnEvaluationDefinitions evaluated after the workload is ready."""
    resource_reference: ResourceReference
    """The Kubernetes workload object this KeptnWorkload represents."""
    metadata: dict[str, str] | None = None
    """Key/value context (from ``keptn.sh/metadata``), merged over the app's metadata."""


class KeptnWorkloadStatus(ApiModel):
    """Observed state of a KeptnWorkload."""

    current_version: str | None = None


class KeptnWorkload(KeptnResource):
    """A Deployment, StatefulSet or DaemonSet under lifecycle management."""

    API_VERSION: ClassVar[str] = API_VERSION
    api_version: str = API_VERSION
    kind: Literal["KeptnWorkload"] = "KeptnWorkload"
    spec: KeptnWorkloadSpec
    status: KeptnWorkloadStatus | None = None


class KeptnWorkloadVersionSpec(KeptnWorkloadSpec):
    """A KeptnWorkload spec frozen at one version."""

    workload_name: str
    """Name of the KeptnWorkload."""
    previous_version: str | None = None
    trace_id: dict[str, str] | None = None
    """Trace context (``traceparent``) of the deployment trace."""


class KeptnWorkloadVersionStatus(ApiModel):
    """Observed progress of one workload version through its phases."""

    pre_deployment_status: State = KeptnState.PENDING
    deployment_status: State = KeptnState.PENDING
    pre_deployment_evaluation_status: State = KeptnState.PENDING
    post_deployment_evaluation_status: State = KeptnState.PENDING
    post_deployment_status: State = KeptnState.PENDING
    pre_deployment_task_status: list[ItemStatus] | None = None
    post_deployment_task_status: list[ItemStatus] | None = None
    pre_deployment_evaluation_task_status: list[ItemStatus] | None = None
    post_deployment_evaluation_task_status: list[ItemStatus] | None = None
    start_time: Time | None = None
    end_time: Time | None = None
    current_phase: str | None = None
    """Short name of the phase being worked on (see :class:`Phase`)."""
    phase_trace_ids: dict[str, dict[str, str]] | None = Field(default=None, alias="phaseTraceIDs")
    """Per phase, the trace context of that phase's span."""
    status: State = KeptnState.PENDING
    """Overall state of the workload version."""
    app_context_metadata: dict[str, str] | None = None
    """Metadata copied from the KeptnAppVersion when the workload version started."""
    deployment_start_time: Time | None = None
    """When the WorkloadDeploy phase started; the observability timeout counts from here."""


class KeptnWorkloadVersion(KeptnResource):
    """One deployment of one version of a KeptnWorkload."""

    API_VERSION: ClassVar[str] = API_VERSION
    api_version: str = API_VERSION
    kind: Literal["KeptnWorkloadVersion"] = "KeptnWorkloadVersion"
    spec: KeptnWorkloadVersionSpec
    status: KeptnWorkloadVersionStatus | None = None


# --- KeptnTaskDefinition -----------------------------------------------------------------------


class FunctionReference(ApiModel):
    """Reuse the code of another KeptnTaskDefinition (with this definition's parameters)."""

    name: str | None = None


class Inline(ApiModel):
    """Code written directly in the definition."""

    code: str | None = None


class HttpReference(ApiModel):
    """Code fetched from a URL when the task starts."""

    url: str | None = None


class ConfigMapReference(ApiModel):
    """Code stored under the ``code`` key of a ConfigMap."""

    name: str | None = None


class RuntimeSpec(ApiModel):
    """A function for one of the built-in runtimes (Deno or Python)."""

    function_ref: FunctionReference | None = None
    inline: Inline | None = None
    http_ref: HttpReference | None = None
    config_map_ref: ConfigMapReference | None = None
    parameters: TaskParameters | None = None
    secure_parameters: SecureParameters | None = None
    cmd_parameters: str | None = None
    """Extra command-line arguments for the runtime (python only)."""


def _container_has_name(value: dict[str, Any]) -> dict[str, Any]:
    name = value.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError("a task container needs a non-empty string 'name'")
    return value


_CONTAINER_SCHEMA = {
    "type": "object",
    "description": (
        "A core/v1 Container, used as given for the task's Job. Its fields are not validated "
        "here; the Job's own validation applies when the task runs."
    ),
    "properties": {"name": {"type": "string", "minLength": 1}, "image": {"type": "string"}},
    "required": ["name"],
    "x-kubernetes-preserve-unknown-fields": True,
}

# A corev1.Container is kept as a free-form dict: klt never interprets most of it, only passes
# it into a Job, and a typed copy of the Container schema would go stale with every Kubernetes
# release. Only ``name`` is checked, because a Job cannot be built without it.
Container = Annotated[FreeForm, AfterValidator(_container_has_name), CrdSchema(_CONTAINER_SCHEMA)]


class ServiceAccountSpec(ApiModel):
    """The ServiceAccount the task's pod runs as."""

    name: str


class AutomountServiceAccountTokenSpec(ApiModel):
    """Whether the task's pod gets API credentials mounted."""

    type: bool


class LocalObjectReference(ApiModel):
    """A reference to an object in the same namespace (an image pull Secret)."""

    name: str | None = None


class KeptnTaskDefinitionSpec(ApiModel):
    """What a KeptnTask runs: set exactly one of ``deno``, ``python`` or ``container``."""

    # The one-runtime rule is enforced by the admission webhook, not here: objects read back
    # from the apiserver are taken as they are.

    python: RuntimeSpec | None = None
    """A Python 3 function run by the python runtime."""
    deno: RuntimeSpec | None = None
    """A Deno (TypeScript/JavaScript) function run by the deno runtime."""
    container: Container | None = None
    """A container of your own, run as is."""
    retries: int = 10
    """How often the task's Job may be retried (its backoffLimit)."""
    timeout: Duration = "5m"
    """How long the task may run before it counts as failed."""
    service_account: ServiceAccountSpec | None = None
    automount_service_account_token: AutomountServiceAccountTokenSpec | None = None
    ttl_seconds_after_finished: int = 300
    """How long a finished Job is kept before Kubernetes deletes it."""
    image_pull_secrets: list[LocalObjectReference] | None = None


class FunctionStatus(ApiModel):
    """Where the definition's function code ended up."""

    config_map: str | None = None
    """The ConfigMap holding the code (generated for inline code, or the referenced one)."""


class KeptnTaskDefinitionStatus(ApiModel):
    """Observed state of a KeptnTaskDefinition."""

    function: FunctionStatus | None = None


class KeptnTaskDefinition(KeptnResource):
    """A reusable task: a function or container run as a Job before or after a deployment."""

    API_VERSION: ClassVar[str] = API_VERSION
    api_version: str = API_VERSION
    kind: Literal["KeptnTaskDefinition"] = "KeptnTaskDefinition"
    spec: KeptnTaskDefinitionSpec = Field(default_factory=KeptnTaskDefinitionSpec)
    status: KeptnTaskDefinitionStatus | None = None


# --- KeptnTask ---------------------------------------------------------------------------------


class TaskContext(ApiModel):
    """What the task runs for; becomes the KEPTN_CONTEXT environment variable."""

    # Keptn writes empty strings rather than omitting these keys; they are kept as written.

    workload_name: str | None = None
    app_name: str | None = None
    app_version: str | None = None
    workload_version: str | None = None
    task_type: str | None = None
    """The check type (``pre``, ``post``, ``promotion``)."""
    object_type: str | None = None
    """``App`` or ``Workload``."""
    metadata: dict[str, str] | None = None


class KeptnTaskSpec(ApiModel):
    """Desired state of a KeptnTask."""

    task_definition: str
    """The KeptnTaskDefinition to run (task namespace first, then the Keptn namespace)."""
    context: TaskContext | None = None
    parameters: TaskParameters | None = None
    """Parameters that take precedence over the definition's."""
    secure_parameters: SecureParameters | None = None
    check_type: str | None = None
    """Lifecycle slot of the task; one of the :class:`CheckType` values when klt created it."""
    retries: int = 10
    timeout: Duration = "5m"


class KeptnTaskStatus(ApiModel):
    """Observed state of a KeptnTask."""

    job_name: str | None = None
    status: State = KeptnState.PENDING
    message: str | None = None
    """Why the Job failed, taken from its condition."""
    start_time: Time | None = None
    end_time: Time | None = None
    reason: str | None = None
    """Reason of the Job's last condition (for example ``BackoffLimitExceeded``)."""
    log_tail: str | None = None
    """klt: the last lines of the task's output (at most a few KiB), kept when it finished, with
    the values of the Secrets given to the task masked."""


class KeptnTask(KeptnResource):
    """One run of a KeptnTaskDefinition, carried out by a Job."""

    API_VERSION: ClassVar[str] = API_VERSION
    api_version: str = API_VERSION
    kind: Literal["KeptnTask"] = "KeptnTask"
    spec: KeptnTaskSpec
    status: KeptnTaskStatus | None = None


# --- KeptnEvaluationDefinition / KeptnEvaluation -----------------------------------------------


class KeptnMetricReference(ApiModel):
    """A KeptnMetric, by name and optionally namespace."""

    name: str
    namespace: str | None = None
    """Defaults to the evaluation's namespace, then the Keptn namespace."""


class Objective(ApiModel):
    """One condition on one metric."""

    keptn_metric_ref: KeptnMetricReference
    evaluation_target: str
    """``<`` or ``>`` followed by a number, for example ``<10``."""


class FailureConditions(ApiModel):
    """How long an evaluation keeps trying before it counts as failed."""

    retries: int = 10
    retry_interval: Duration = "5s"


class KeptnEvaluationDefinitionSpec(FailureConditions):
    """The objectives a KeptnEvaluation must meet."""

    objectives: list[Objective]


class KeptnEvaluationDefinition(KeptnResource):
    """A reusable set of metric objectives for pre/post-deployment evaluations."""

    API_VERSION: ClassVar[str] = API_VERSION
    api_version: str = API_VERSION
    kind: Literal["KeptnEvaluationDefinition"] = "KeptnEvaluationDefinition"
    spec: KeptnEvaluationDefinitionSpec
    status: str | None = None
    """Unused."""


class KeptnEvaluationSpec(FailureConditions):
    """Desired state of a KeptnEvaluation."""

    workload: str | None = None
    workload_version: str
    """Version of the workload; Keptn writes an empty string for app-level evaluations."""
    app_name: str | None = None
    app_version: str | None = None
    evaluation_definition: str
    """The KeptnEvaluationDefinition to evaluate."""
    check_type: str | None = None
    """``pre-eval`` or ``post-eval`` when klt created it (see :class:`CheckType`)."""


class EvaluationStatusItem(ApiModel):
    """Result of one objective."""

    value: str
    status: State
    message: str | None = None


class KeptnEvaluationStatus(ApiModel):
    """Observed state of a KeptnEvaluation."""

    retry_count: Annotated[int, Crd(required=True)] = 0
    evaluation_status: Annotated[dict[str, EvaluationStatusItem], Crd(required=True)] = Field(
        default_factory=dict
    )
    """Per metric name, the result of its objective."""
    overall_status: Annotated[State, Crd(required=True)] = KeptnState.PENDING
    start_time: Time | None = None
    end_time: Time | None = None


class KeptnEvaluation(KeptnResource):
    """One evaluation of a KeptnEvaluationDefinition, retried until it passes or gives up."""

    API_VERSION: ClassVar[str] = API_VERSION
    api_version: str = API_VERSION
    kind: Literal["KeptnEvaluation"] = "KeptnEvaluation"
    spec: KeptnEvaluationSpec
    status: KeptnEvaluationStatus | None = None
