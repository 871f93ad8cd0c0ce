"""Running an action's tasks as Jobs: create (or find), wait by watching, collect the logs.

Tasks run one after another; the first failure ends the action and later tasks do not run.
Before any Job starts, every image of the action is checked against the allow-list, so an
action with one forbidden image runs nothing at all.

Per task:

1. the Job is looked up by its deterministic name. One made for this event (a redelivery, or
   a handler that was cancelled) is adopted and waited for; none is created again. One made
   for another event fails the task instead of being adopted;
2. otherwise the environment is resolved (``valueFrom: secret`` reads the Secret's key list
   in the task's namespace; the values stay in the Secret and are only remembered to be
   masked in logs), the task's files are copied into its own ConfigMap, and the Job is
   created (``AlreadyExists`` leads back to step 1's adoption);
3. the Job is watched, from the resourceVersion of a fresh read, until it is Complete,
   Failed or Suspended, or ``maxPollDuration`` has passed. No polling: a watch that ends
   early is resumed, one whose resourceVersion expired (410) starts from a fresh read;
4. the logs of the Job's pods are read through ``pods/log`` (the end of each container's log,
   bounded), with Secret values masked. A failed task's report adds the Job's ``Failed*``
   Kubernetes events, which explain Jobs whose pods never started.

Errors the user can fix (a missing Secret, a forbidden image, an invalid object the apiserver
refused, a failed container) become the task's failure. Temporary apiserver trouble is raised
(``TemporaryError`` or a temporary ``ApiError``), so the bus retries the whole event; the
deterministic names make that retry adopt what exists.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp

from klt_common.aiokits.errors import TemporaryError
from klt_common.clients import cluster as k8s
from klt_common.clients import pod_logs
from klt_task_runner.jobexecutor import config, envs, jobspec
from klt_task_runner.jobexecutor.cloudevents import KeptnEvent, Scope
from klt_task_runner.jobexecutor.images import AllowList
from klt_task_runner.jobexecutor.lookup import FoundConfig
from klt_task_runner.jobexecutor.settings import JobExecutorSettings

_log = logging.getLogger(__name__)

MASK = "***"
_WATCH_RETRY_DELAY = 1.0
"""Seconds before re-reading a Job whose watch broke off (connection lost)."""


class Abandoned(TemporaryError):
    """The partition is being given up: stop waiting; the next owner resumes the event."""


@dataclass(frozen=True)
class JobResult:
    ok: bool
    error: str = ""


@dataclass(frozen=True)
class TaskOutcome:
    name: str
    ok: bool
    error: str
    """JES's wording: ``Error while creating job: …``, ``job X failed. Reason: …`` …"""

    logs: str
    created_at: datetime | None = None
    """When the task's Job was created (None if it never was)."""

    def report(self) -> str:
        if self.ok:
            return f"Task '{self.name}' finished successfully!\n\nLogs:\n{self.logs}\n\n"
        return f"Task '{self.name}' failed: {self.error}\n\nLogs: \n{self.logs}"


@dataclass(frozen=True)
class ActionOutcome:
    ok: bool
    message: str
    started_at: datetime | None
    """When the action's first Job was created."""


@dataclass(frozen=True)
class Run:
    """What every task of one event shares."""

    event: KeptnEvent
    scope: Scope
    found: FoundConfig
    config_hash: str


def go_duration(seconds: float) -> str:
    """``300`` → ``5m0s``: durations the way JES's (Go's) messages print them."""
    total = int(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def job_result(job: k8s.Body) -> JobResult | None:
    """The outcome a Job's conditions tell, or None while it is still running."""
    name = job.get("metadata", {}).get("name", "?")
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("status") != "True":
            continue
        kind = condition.get("type")
        reason = condition.get("reason", "")
        message = condition.get("message", "")
        if kind == "Complete":
            return JobResult(True)
        if kind == "Failed":
            if reason == "DeadlineExceeded":
                return JobResult(False, f"job {name} failed: job deadline exceeded")
            return JobResult(False, f"job {name} failed. Reason: {reason}, Message: {message}")
        if kind == "Suspended":
            return JobResult(
                False, f"job {name} was suspended. Reason: {reason}, Message: {message}"
            )
    return None


def mask(text: str, secrets: list[str]) -> str:
    """``text`` with every secret value replaced by ``***`` (longest first)."""
    for value in sorted(set(secrets), key=len, reverse=True):
        text = text.replace(value, MASK)
    return text


def tail(text: str, limit: int) -> str:
    """The last ``limit`` bytes of ``text`` (UTF-8), saying how much was cut."""
    raw = text.encode()
    if len(raw) <= limit:
        return text
    kept = raw[-limit:].decode("utf-8", errors="ignore")
    return f"[… {len(raw) - limit} bytes cut …]\n{kept}"


def bound_message(text: str, limit: int) -> str:
    """At most ``limit`` bytes: the beginning and the end, with a note where it was cut."""
    raw = text.encode()
    if len(raw) <= limit:
        return text
    note = f"\n[… {len(raw) - limit} bytes cut …]\n".encode()
    half = max(0, (limit - len(note)) // 2)
    head = raw[:half].decode("utf-8", errors="ignore")
    end = raw[len(raw) - half :].decode("utf-8", errors="ignore") if half else ""
    return head + note.decode() + end


def _created(job: k8s.Body) -> datetime | None:
    stamp = (job.get("metadata") or {}).get("creationTimestamp")
    if not isinstance(stamp, str):
        return None
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None


def _secret_values(secret: k8s.Body, min_length: int) -> list[str]:
    values: list[str] = []
    for raw in (secret.get("data") or {}).values():
        try:
            text = base64.b64decode(raw).decode("utf-8", errors="ignore")
        except (binascii.Error, ValueError):
            continue
        candidates = [text, text.strip(), *text.splitlines()]
        values += [c for c in candidates if len(c) >= min_length]
    return values


class Executor:
    """Runs actions for one task-runner process."""

    def __init__(self, settings: JobExecutorSettings, client: k8s.ClusterClient) -> None:
        self._settings = settings
        self._client = client
        self._allow = AllowList.compile(settings.allowed_images)

    async def run_action(
        self, run: Run, action_index: int, action: config.Action, stop: asyncio.Event
    ) -> ActionOutcome:
        for task in action.tasks:
            if not self._allow.allows(task.image):
                return ActionOutcome(
                    False,
                    f"Forbidden: Image {task.image} does not match configured image allowlist.\n",
                    None,
                )
        reports: list[str] = []
        started_at: datetime | None = None
        for task_index, task in enumerate(action.tasks):
            outcome = await self.run_task(run, action_index, action, task_index, task, stop)
            started_at = started_at or outcome.created_at
            reports.append(outcome.report())
            if not outcome.ok:
                _log.info(
                    "event %s: task %r of action %r failed: %s",
                    run.event.id,
                    task.name,
                    action.name,
                    outcome.error,
                )
                return ActionOutcome(False, "".join(reports), started_at)
        return ActionOutcome(True, "".join(reports), started_at)

    async def run_task(
        self,
        run: Run,
        action_index: int,
        action: config.Action,
        task_index: int,
        task: config.Task,
        stop: asyncio.Event,
    ) -> TaskOutcome:
        ref = jobspec.TaskRef(
            event_id=run.event.id,
            keptn_context=run.event.shkeptncontext,
            git_commit_id=run.event.gitcommitid,
            action_index=action_index,
            action_name=action.name,
            task_index=task_index,
            task_name=task.name,
            config_hash=run.config_hash,
        )
        namespace = task.namespace or self._settings.job_namespace
        name = ref.job_name

        def failed(error: str, created: datetime | None = None) -> TaskOutcome:
            return TaskOutcome(task.name, False, error, "", created)

        job = await self._client.get_or_none(k8s.JOBS, name, namespace)
        secrets: list[str] = []
        if job is not None:
            if not jobspec.belongs_to(job, ref):
                return failed(
                    f"Error while creating job: job {namespace}/{name} already exists "
                    "and belongs to another event"
                )
            _log.info("event %s: adopting the existing job %s/%s", run.event.id, namespace, name)
            secrets = await self._secret_masks(task, namespace)
            await self._adopt_files(run, ref, task, namespace, job)
        else:
            try:
                env, secrets = await self._environment(run, task, namespace)
                files = jobspec.select_files(task, run.found.files)
                body = jobspec.job(
                    ref, task, namespace=namespace, env=env, files=files, settings=self._settings
                )
            except (envs.EnvError, jobspec.SpecError) as exc:
                return failed(f"Error while creating job: {exc}")
            try:
                if files:
                    await self._create_files(run, ref, namespace, files)
                job = await self._client.create(k8s.JOBS, body, namespace)
                _log.info("event %s: created job %s/%s", run.event.id, namespace, name)
            except k8s.AlreadyExists:
                job = await self._client.get(k8s.JOBS, name, namespace)
                if not jobspec.belongs_to(job, ref):
                    return failed(
                        f"Error while creating job: job {namespace}/{name} already exists "
                        "and belongs to another event"
                    )
            except k8s.ApiError as exc:
                if exc.temporary:
                    raise
                if files:  # no Job will ever own it
                    await self._client.delete(
                        k8s.CONFIGMAPS, jobspec.files_configmap_name(name), namespace
                    )
                return failed(f"Error while creating job: {exc}")
            if files:
                await self._own_files(namespace, ref, job)
        created = _created(job)
        timeout = task.max_poll_duration or self._settings.max_poll_duration
        result = await self.wait(namespace, name, timeout=timeout, stop=stop)
        logs = await self.collect_logs(namespace, name, failed=not result.ok, secrets=secrets)
        return TaskOutcome(task.name, result.ok, result.error, logs, created)

    # -- environment and files ------------------------------------------------------------

    async def _environment(
        self, run: Run, task: config.Task, namespace: str
    ) -> tuple[list[envs.EnvEntry], list[str]]:
        entries: list[envs.EnvEntry] = []
        secrets: list[str] = []
        mapped = run.event.mapped()
        for env in task.env:
            if env.source == "string":
                entries.append({"name": env.name, "value": env.value})
            elif env.source == "event":
                entries.append(envs.event_entry(env, mapped))
            else:
                secret = await self._read_secret(env.name, namespace)
                entries += envs.secret_entries(env, list((secret.get("data") or {}).keys()))
                secrets += _secret_values(secret, self._settings.mask_min_length)
        entries += envs.keptn_entries(run.scope)
        return entries, secrets

    async def _read_secret(self, name: str, namespace: str) -> k8s.Body:
        try:
            return await self._client.get(k8s.SECRETS, name, namespace)
        except k8s.NotFound:
            raise envs.EnvError(
                f'could not add env with name {name}, valueFrom secret: secrets "{name}" not found'
            ) from None
        except k8s.ApiError as exc:
            if exc.temporary:
                raise
            raise envs.EnvError(
                f"could not add env with name {name}, valueFrom secret: {exc}"
            ) from None

    async def _secret_masks(self, task: config.Task, namespace: str) -> list[str]:
        """The values to mask for an adopted Job: best effort (the Secret may be gone)."""
        values: list[str] = []
        for env in task.env:
            if env.source != "secret":
                continue
            secret = await self._client.get_or_none(k8s.SECRETS, env.name, namespace)
            if secret is not None:
                values += _secret_values(secret, self._settings.mask_min_length)
        return values

    async def _create_files(
        self, run: Run, ref: jobspec.TaskRef, namespace: str, files: list[tuple[str, str]]
    ) -> None:
        body = jobspec.files_configmap(
            ref, namespace, files, run.found.data, run.found.binary_data, self._settings
        )
        with contextlib.suppress(k8s.AlreadyExists):
            await self._client.create(k8s.CONFIGMAPS, body, namespace)

    async def _own_files(self, namespace: str, ref: jobspec.TaskRef, job: k8s.Body) -> None:
        """Make the Job own its files' ConfigMap, so both go when the Job's TTL ends."""
        meta = job["metadata"]
        owner = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": meta["name"],
            "uid": meta["uid"],
        }
        with contextlib.suppress(k8s.NotFound):
            await self._client.patch(
                k8s.CONFIGMAPS,
                jobspec.files_configmap_name(ref.job_name),
                {"metadata": {"ownerReferences": [owner]}},
                namespace,
            )

    async def _adopt_files(
        self, run: Run, ref: jobspec.TaskRef, task: config.Task, namespace: str, job: k8s.Body
    ) -> None:
        # The previous attempt may have stopped between creating the Job and owning its files.
        if not task.files:
            return
        try:
            files = jobspec.select_files(task, run.found.files)
        except jobspec.SpecError:
            return
        await self._create_files(run, ref, namespace, files)
        await self._own_files(namespace, ref, job)

    # -- waiting --------------------------------------------------------------------------

    async def wait(
        self, namespace: str, name: str, *, timeout: float, stop: asyncio.Event
    ) -> JobResult:
        """Watch the Job until it ends or ``timeout`` seconds pass.

        Raises:
            Abandoned: ``stop`` was set first.
        """
        watcher = asyncio.ensure_future(self._watch(namespace, name, timeout))
        stopper = asyncio.ensure_future(stop.wait())
        try:
            done, _ = await asyncio.wait({watcher, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (watcher, stopper):
                task.cancel()
            await asyncio.gather(watcher, stopper, return_exceptions=True)
        if watcher in done:
            return watcher.result()
        raise Abandoned(f"stopped while waiting for job {namespace}/{name}")

    async def _watch(self, namespace: str, name: str, timeout: float) -> JobResult:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        timed_out = JobResult(
            False,
            f"polling for job {name} timing out after {go_duration(timeout)}: "
            "max poll count reached for job",
        )
        gone = JobResult(False, f"job {name} was deleted before it finished")
        while True:
            job = await self._client.get_or_none(k8s.JOBS, name, namespace)
            if job is None:
                return gone
            if (result := job_result(job)) is not None:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                return timed_out
            version = str(job.get("metadata", {}).get("resourceVersion", ""))
            server_timeout = max(1, min(int(remaining) + 1, self._client.settings.watch_timeout))
            try:
                async with asyncio.timeout(remaining):
                    stream = self._client.watch(
                        k8s.JOBS,
                        namespace,
                        resource_version=version,
                        field_selector=f"metadata.name={name}",
                        timeout_seconds=server_timeout,
                    )
                    async with contextlib.aclosing(stream):
                        async for event in stream:
                            if event.type == "DELETED":
                                return gone
                            result = job_result(event.object)
                            if event.type in ("ADDED", "MODIFIED") and result is not None:
                                return result
            except TimeoutError:
                final = await self._client.get_or_none(k8s.JOBS, name, namespace)
                if final is not None and (result := job_result(final)) is not None:
                    return result
                return timed_out
            except k8s.Gone:
                continue  # the next read gives a current resourceVersion
            except (aiohttp.ClientError, asyncio.IncompleteReadError, k8s.ApiError) as exc:
                if isinstance(exc, k8s.ApiError) and not exc.temporary:
                    raise
                _log.warning("watch of job %s/%s broke off (%s); resuming", namespace, name, exc)
                await asyncio.sleep(_WATCH_RETRY_DELAY)

    # -- logs -----------------------------------------------------------------------------

    async def collect_logs(
        self, namespace: str, job: str, *, failed: bool, secrets: list[str]
    ) -> str:
        """The report of every container of the Job's pods, JES's format, masked and bounded."""
        pods = await self._client.list(k8s.PODS, namespace, label_selector=f"job-name={job}")
        parts: list[str] = []
        for pod in sorted(pods.items, key=_pod_order):
            pod_name = pod["metadata"]["name"]
            status = pod.get("status") or {}
            for statuses, init in (
                (status.get("initContainerStatuses"), True),
                (status.get("containerStatuses"), False),
            ):
                for container in statuses or []:
                    part = await self._container_report(
                        namespace, pod_name, container, init=init, failed=failed
                    )
                    if part:
                        parts.append(part)
        if failed:
            parts.append(await self._failed_events(namespace, job))
        return mask("".join(parts), secrets)

    async def _container_report(
        self, namespace: str, pod: str, status: dict[str, Any], *, init: bool, failed: bool
    ) -> str:
        name = status.get("name", "?")
        state = status.get("state") or {}
        terminated = state.get("terminated")
        if terminated is None:
            waiting = state.get("waiting") or {}
            reason = waiting.get("reason")
            if reason and reason not in ("ContainerCreating", "PodInitializing"):
                return (
                    f"Container {name} of pod {pod} is waiting (Reason: {reason}, "
                    f"Message: {waiting.get('message', '')})\n\n"
                )
            return ""
        completed = terminated.get("reason") == "Completed"
        if init and completed and not failed:
            return ""  # JES shows init containers only when something went wrong
        try:
            text = await pod_logs.read_log(
                self._client,
                namespace,
                pod,
                name,
                tail_lines=self._settings.log_tail_lines,
                limit_bytes=max(self._settings.max_log_bytes * 4, 65_536),
            )
        except k8s.ApiError as exc:
            if exc.temporary:
                raise
            text = f"Unable to query logs of container: {exc}"
        if not text.strip() and completed:
            return ""
        if completed:
            header = f"Container {name} of pod {pod}:"
        elif terminated.get("message"):
            header = (
                f"Container {name} of pod {pod} terminated with an error (Reason: "
                f"{terminated.get('reason', '')}, Message: {terminated['message']}):"
            )
        else:
            header = (
                f"Container {name} of pod {pod} terminated with an error (Reason: "
                f"{terminated.get('reason', '')}, ExitCode: {terminated.get('exitCode', '?')}):"
            )
        return f"{header}\n{tail(text, self._settings.max_log_bytes)}\n\n"

    async def _failed_events(self, namespace: str, job: str) -> str:
        listed = await self._client.list(
            k8s.EVENTS,
            namespace,
            field_selector=f"involvedObject.kind=Job,involvedObject.name={job}",
        )
        lines = [
            f"{e.get('reason', '')}: {e.get('message', '')}\n"
            for e in sorted(listed.items, key=lambda e: str(e.get("lastTimestamp") or ""))
            if str(e.get("reason", "")).startswith("Failed")
        ]
        return "".join(lines)


def _pod_order(pod: k8s.Body) -> tuple[str, str]:
    meta = pod.get("metadata") or {}
    return (str(meta.get("creationTimestamp", "")), str(meta.get("name", "")))


def now() -> datetime:
    return datetime.now(UTC)
