"""Running KeptnTasks as Jobs: the reconcile loop of the task-runner.

What starts work
----------------
A task is reconciled when anything about it may have changed: its ``sh.klt.task.requested``
event, a change to the KeptnTask itself (a task created by a user, or one whose event was lost,
is picked up from the watch), a change to its Job or its pods (watched, label-selected; never
polled), a definition appearing or changing, and a slow timer for tasks still waiting for a
definition. All of these only put the task's key on a ``KeyedWorkQueue``.

What a reconcile does
---------------------
It derives everything from the KeptnTask, its Job and its pods, so it can run any number of
times, in any process, after any crash:

1. a completed task (Succeeded/Failed) is left alone;
2. the task's Job is looked up by its deterministic name, by ``status.jobName`` and by the
   ``klt.dev/task-uid`` label; a Job recorded in the status but gone (deleted before its result
   was read) fails the task instead of running it again (Keptn re-runs it, keptn#3921);
3. without a Job: the definition is looked up (task namespace, then klt's); a missing one keeps
   the task Pending (event ``CreateTaskNotFound``), an unusable one fails it; otherwise the
   code ConfigMap is made sure of and the Job created. ``AlreadyExists`` means another replica
   or an earlier attempt created it: it is adopted, never duplicated;
4. with a running Job: the status says Progressing, and why a pod cannot start, if it cannot;
5. with a finished Job: ``TaskFinished`` is published (an id derived from task and outcome),
   *then* the status is written with the outcome, times and the tail of the pod's log. A crash
   between the two republishes the same event, which consumers recognise as a duplicate; the
   reverse order could lose the event for good.

Status writes carry the resourceVersion they were computed from and never move a task
backwards (Pending < Progressing < Succeeded/Failed), so replicas and stale caches cannot undo
each other's progress.

Secrets
-------
``SECURE_DATA`` reaches the pod only through a ``secretKeyRef``; klt never reads its value to
build anything. The one place it reads Secrets is the log tail: before the tail of a task's
output is stored in the task's status, the values of the Secrets the pod was given are masked.
If such a Secret cannot be read, the tail is withheld rather than stored unmasked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from klt_common.aiokits.workqueue import KeyedWorkQueue
from klt_common.clients import cluster as k8s
from klt_common.clients import events_recorder, pod_logs
from klt_common.clients.bus import Publisher
from klt_common.observability.tracing import in_trace
from klt_common.structs import events
from klt_common.structs.api import lifecycle
from klt_common.structs.api.enums import KeptnState
from klt_task_runner import jobspec, outcome
from klt_task_runner.definitions import DefinitionStore, write_configmap
from klt_task_runner.meters import TaskMeters
from klt_task_runner.settings import TaskSettings

_log = logging.getLogger(__name__)

Body = dict[str, Any]
Key = tuple[str, str]

TASKS = k8s.keptn_resource("KeptnTask")

_RANK = {
    KeptnState.PENDING: 0,
    KeptnState.PROGRESSING: 1,
    KeptnState.SUCCEEDED: 2,
    KeptnState.FAILED: 2,
}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def class_selector(runner_class: str) -> str:
    """The label selector of the tasks (and Jobs, pods) one installation owns."""
    if runner_class:
        return f"{jobspec.LABEL_RUNNER_CLASS}={runner_class}"
    return f"!{jobspec.LABEL_RUNNER_CLASS}"


def _state(status: Body) -> KeptnState:
    raw = status.get("status") or "Pending"
    try:
        return KeptnState(raw)
    except ValueError:
        return KeptnState.PENDING


def advance(current: Body, update: Body) -> Body | None:
    """The status after applying ``update`` to ``current``, or None when that would change
    nothing or move the task backwards (a completed task is never rewritten)."""
    old = _state(current)
    new = _state({**current, **update})
    if old.is_completed or _RANK.get(new, 0) < _RANK.get(old, 0):
        return None
    merged = {k: v for k, v in {**current, **update}.items() if v is not None}
    return None if merged == current else merged


class IndexedCache:
    """A ``WatchCache`` plus an index of its objects by one computed value (a uid, a label),
    and callbacks for every change."""

    def __init__(self, cache: k8s.WatchCache, index: Callable[[Body], str | None]) -> None:
        self.cache = cache
        self._index_of = index
        self._index: dict[str, dict[tuple[str, str], Body]] = {}
        self._events = cache.subscribe()
        self.listeners: list[Callable[[str, Body], None]] = []
        self.ready = asyncio.Event()

    def get(self, value: str) -> list[Body]:
        return list(self._index.get(value, {}).values())

    def _put(self, etype: str, obj: Body) -> None:
        value = self._index_of(obj)
        if value is None:
            return
        key = k8s.WatchCache.key_of(obj)
        bucket = self._index.setdefault(value, {})
        if etype == "DELETED":
            bucket.pop(key, None)
            if not bucket:
                self._index.pop(value, None)
        else:
            bucket[key] = obj

    async def run(self, stop: asyncio.Event) -> None:
        """Keep the index current (the cache itself runs as its own root task)."""
        stopped = asyncio.ensure_future(stop.wait())
        try:
            synced = asyncio.ensure_future(self.cache.wait_synced())
            await asyncio.wait({synced, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not synced.done():
                synced.cancel()
                return
            for obj in self.cache.values():
                self._put("ADDED", obj)
            self.ready.set()
            for obj in self.cache.values():
                self._notify("ADDED", obj)
            while not stop.is_set():
                getter = asyncio.ensure_future(self._events.get())
                await asyncio.wait({getter, stopped}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    return
                event = getter.result()
                self._put(event.type, event.object)
                self._notify(event.type, event.object)
        finally:
            stopped.cancel()

    def _notify(self, etype: str, obj: Body) -> None:
        for listener in self.listeners:
            try:
                listener(etype, obj)
            except Exception:  # noqa: BLE001 - a listener bug must not stop the index
                _log.exception("listener failed on %s", k8s.WatchCache.key_of(obj))


def _task_uid_label(obj: Body) -> str | None:
    value = ((obj.get("metadata") or {}).get("labels") or {}).get(jobspec.LABEL_TASK_UID)
    return str(value) if value else None


def _uid(obj: Body) -> str | None:
    value = (obj.get("metadata") or {}).get("uid")
    return str(value) if value else None


@dataclass
class _Finish:
    outcome: outcome.Outcome
    job: Body


class TaskRunner:
    """Turns KeptnTasks into Jobs and Jobs' results into TaskFinished events and statuses."""

    def __init__(
        self,
        client: k8s.ClusterClient,
        publisher: Publisher,
        settings: TaskSettings,
        *,
        klt_namespace: str,
        source: str,
        instance: str = "",
        meters: TaskMeters | None = None,
    ) -> None:
        self.client = client
        self.meters = meters
        self.publisher = publisher
        self.settings = settings
        self.source = source
        self.klt_namespace = klt_namespace
        selector = class_selector(settings.runner_class)
        owned = f"{jobspec.LABEL_TASK_UID},{selector}"
        self.tasks = IndexedCache(k8s.WatchCache(client, TASKS, label_selector=selector), _uid)
        self.jobs = IndexedCache(
            k8s.WatchCache(client, k8s.JOBS, label_selector=owned), _task_uid_label
        )
        self.pods = IndexedCache(
            k8s.WatchCache(client, k8s.PODS, label_selector=owned), _task_uid_label
        )
        self.definitions = DefinitionStore(client, klt_namespace)
        self.images = jobspec.Images(deno=settings.deno_image, python=settings.python_image)
        self.queue: KeyedWorkQueue[Key] = KeyedWorkQueue(
            self.reconcile,
            workers=settings.workers,
            retry_delays=settings.error_retry_delays,
            name="tasks",
        )
        self.definition_queue: KeyedWorkQueue[Key] = KeyedWorkQueue(
            self.definitions.reconcile,
            workers=4,
            retry_delays=settings.error_retry_delays,
            name="definitions",
        )
        self.recorder = events_recorder.EventRecorder(
            client, component="klt-task-runner", instance=instance
        )
        self._log_tails: dict[str, str] = {}
        self._captured: dict[str, set[tuple[str, str, int, str]]] = {}
        self._capture_gate = asyncio.Semaphore(settings.log_capture_concurrency)
        self._background: set[asyncio.Task[None]] = set()
        self._problems: dict[str, outcome.PodProblem] = {}
        self._tombstones: dict[str, Body] = {}
        # What this process itself created and wrote, until the watches catch up: a reconcile
        # that runs right after our own write must not mistake the lag for a missing Job.
        self._created_jobs: dict[str, Body] = {}
        self._written: dict[str, Body] = {}
        self.tasks.listeners.append(self._on_task)
        if meters is not None:
            self.tasks.listeners.append(meters.on_task)
        self.jobs.listeners.append(self._on_job)
        self.pods.listeners.append(self._on_pod)
        self._definition_events = self.definitions.cache.subscribe()

    # -- wiring ------------------------------------------------------------------------------

    def caches(self) -> list[k8s.WatchCache]:
        return [
            self.tasks.cache,
            self.jobs.cache,
            self.pods.cache,
            self.definitions.cache,
            self.definitions.code_maps,
        ]

    @property
    def ready(self) -> bool:
        return all(c.synced for c in self.caches()) and all(
            i.ready.is_set() for i in (self.tasks, self.jobs, self.pods)
        )

    async def wait_ready(self) -> None:
        for cache in self.caches():
            await cache.wait_synced()
        for index in (self.tasks, self.jobs, self.pods):
            await index.ready.wait()

    async def run_definitions(self, stop: asyncio.Event) -> None:
        """Reconcile definitions as they change; re-check the tasks that may wait for them."""
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await self.definitions.cache.wait_synced()
            for body in self.definitions.cache.values():
                self.definition_queue.add(k8s.WatchCache.key_of(body))
            while not stop.is_set():
                getter = asyncio.ensure_future(self._definition_events.get())
                await asyncio.wait({getter, stopped}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    return
                event = getter.result()
                if event.type != "DELETED":
                    self.definition_queue.add(k8s.WatchCache.key_of(event.object))
                self._wake_waiting()
        finally:
            stopped.cancel()

    async def run_pending_timer(self, stop: asyncio.Event) -> None:
        """The slow safety net for tasks waiting for something no watch reports."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.pending_retry_seconds)
            if not stop.is_set() and self.ready:
                self._wake_waiting()

    async def run_background(self, stop: asyncio.Event) -> None:
        """Owns the log captures started from pod events; cancels them on stop."""
        await stop.wait()
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    def _wake_waiting(self) -> None:
        for body in self.tasks.cache.values():
            status = body.get("status") or {}
            if not _state(status).is_completed and not status.get("jobName"):
                self.queue.add(k8s.WatchCache.key_of(body))

    def _on_task(self, etype: str, body: Body) -> None:
        if etype == "DELETED":
            uid = _uid(body)
            if uid:
                self._forget(uid)
            return
        if _state(body.get("status") or {}).is_completed:
            return
        ours = self._written.get(_uid(body) or "")
        if ours is not None and _rv(ours) == _rv(body):
            return  # the echo of this process's own status write: nothing new
        self.queue.add(k8s.WatchCache.key_of(body))

    def _task_key_of(self, obj: Body) -> Key | None:
        uid = _task_uid_label(obj)
        if uid is None:
            return None
        for task in self.tasks.get(uid):
            return k8s.WatchCache.key_of(task)
        return None

    def _on_job(self, etype: str, body: Body) -> None:
        uid = _task_uid_label(body)
        if uid is not None:
            self._created_jobs.pop(uid, None)  # the watch has caught up (or the Job is gone)
        if etype == "DELETED" and uid is not None:
            # The last state of a deleted Job: a Job removed right after it finished (a short
            # ttlSecondsAfterFinished) still reports its outcome. Kept only while its task
            # still waits for it.
            waiting = [
                t for t in self.tasks.get(uid) if not _state(t.get("status") or {}).is_completed
            ]
            if waiting:
                self._tombstones[uid] = body
        key = self._task_key_of(body)
        if key is not None:
            self.queue.add(key)

    def _on_pod(self, etype: str, body: Body) -> None:
        key = self._task_key_of(body)
        uid = _task_uid_label(body)
        if key is None or uid is None:
            return
        if all(_state(t.get("status") or {}).is_completed for t in self.tasks.get(uid)):
            return  # the task's result is recorded; its pod no longer matters
        # Pods matter to a task's status only when one cannot start, or stopped being stuck;
        # the outcome itself comes from the Job.
        if uid in self._problems or (
            etype != "DELETED" and outcome.pod_problem([body]) is not None
        ):
            self.queue.add(key)
        if etype == "DELETED":
            return
        pod_name = str(body["metadata"]["name"])
        for container, restarts, finished in outcome.failed_containers(body):
            mark = (pod_name, container, restarts, finished)
            seen = self._captured.setdefault(uid, set())
            if mark in seen:
                continue
            seen.add(mark)
            job = next(iter(self.jobs.get(uid)), None)
            self._spawn(self._capture(uid, key[0], pod_name, container, job))

    def _spawn(self, coroutine: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _forget(self, uid: str) -> None:
        self._log_tails.pop(uid, None)
        self._problems.pop(uid, None)
        self._tombstones.pop(uid, None)
        self._created_jobs.pop(uid, None)
        self._written.pop(uid, None)
        self._captured.pop(uid, None)

    # -- the event handler ---------------------------------------------------------------------

    async def on_task_requested(self, envelope: events.Envelope[events.TaskRequested]) -> None:
        """A task was asked for: reconcile it now; the handler returns once its Job exists (or
        the task is waiting or failed), so the offset is committed only after that."""
        data = envelope.data
        await self.queue.submit((data.namespace, data.task_name))

    # -- reconcile -----------------------------------------------------------------------------

    async def reconcile(self, key: Key) -> None:
        namespace, name = key
        await self.wait_ready()
        body = self.tasks.cache.get(name, namespace)
        if body is None:
            # Not (yet) in the cache: the event may have overtaken the watch.
            body = await self.client.get_or_none(TASKS, name, namespace)
            if body is None or not self._owned(body):
                return
        if (body.get("metadata") or {}).get("deletionTimestamp"):
            return
        status: Body = body.get("status") or {}
        if _state(status).is_completed:
            return
        task = lifecycle.KeptnTask.model_validate(body)
        job = await self._find_job(task, status)
        if job is None:
            job = self._tombstones.get(task.metadata.uid or "")
            if job is not None and outcome.job_outcome(job) is None:
                await self._job_lost(body, task, str(job["metadata"]["name"]))
                return
        if job is None:
            if status.get("jobName") and _state(status) is KeptnState.PROGRESSING:
                await self._job_lost(body, task, str(status["jobName"]))
                return
            await self._start(body, task)
            return
        finished = outcome.job_outcome(job)
        if finished is None:
            await self._progress(body, task, job)
            return
        await self._finish(body, task, _Finish(finished, job))

    def _owned(self, body: Body) -> bool:
        labels = (body.get("metadata") or {}).get("labels") or {}
        return bool(labels.get(jobspec.LABEL_RUNNER_CLASS, "") == self.settings.runner_class)

    async def _find_job(self, task: lifecycle.KeptnTask, status: Body) -> Body | None:
        meta = task.metadata
        namespace, uid = meta.namespace or "", meta.uid or ""
        expected = jobspec.job_name(meta.name or "", uid)
        for job in self.jobs.get(uid):
            if (job.get("metadata") or {}).get("namespace") == namespace:
                return job
        cached = self.jobs.cache.get(expected, namespace)
        if cached is not None:
            return cached
        created = self._created_jobs.get(uid)
        if created is not None:
            return created
        recorded = status.get("jobName")
        if recorded:
            # Ours but not in the cache yet, or a Job created by Keptn before klt took over.
            found = await self.client.get_or_none(k8s.JOBS, str(recorded), namespace)
            if found is not None and _owned_by(found, uid):
                return found
        return None

    async def _start(self, body: Body, task: lifecycle.KeptnTask) -> None:
        meta = task.metadata
        namespace = meta.namespace or ""
        wanted = task.spec.task_definition
        definition = self.definitions.lookup(wanted, namespace)
        if definition is None:
            await self._wait_for_definition(body, task, wanted)
            return
        try:
            plan = jobspec.plan_job(
                task,
                definition,
                lambda ref: self.definitions.lookup(ref, namespace),
                self.images,
            )
        except jobspec.DefinitionNotFound as missing:
            await self._wait_for_definition(body, task, missing.name)
            return
        except jobspec.DefinitionError as invalid:
            await self._fail_without_job(body, task, invalid.reason, invalid.message)
            return
        if plan.code_copy is not None:
            if not await self._copy_code(body, task, plan.code_copy):
                return
        elif plan.inline_config_map and plan.function is not None:
            await self.definitions.ensure_code(plan.function.code.definition)
        job = await self._create_job(body, task, plan)
        if job is None:
            return
        self._created_jobs[meta.uid or ""] = job
        await self._write_status(
            body,
            {
                "status": KeptnState.PROGRESSING.value,
                "jobName": job["metadata"]["name"],
                "startTime": (body.get("status") or {}).get("startTime") or _now(),
                "reason": None,
                "message": None,
            },
        )

    async def _create_job(
        self, body: Body, task: lifecycle.KeptnTask, plan: jobspec.JobPlan
    ) -> Body | None:
        namespace = task.metadata.namespace or ""
        name = plan.job["metadata"]["name"]
        try:
            return await self.client.create(k8s.JOBS, plan.job, namespace)
        except k8s.AlreadyExists:
            existing = await self.client.get_or_none(k8s.JOBS, name, namespace)
            if existing is None:
                raise  # deleted in between: try again
            if not _owned_by(existing, task.metadata.uid or ""):
                await self._fail_without_job(
                    body,
                    task,
                    "CreateTaskFailed",
                    f"could not create Job {name}: a Job of that name belongs to something else",
                )
                return None
            return existing
        except k8s.Invalid as exc:
            await self._fail_without_job(
                body, task, "CreateTaskFailed", f"could not create Job {name}: {exc.message}"
            )
            return None

    async def _copy_code(
        self, body: Body, task: lifecycle.KeptnTask, copy: jobspec.CodeCopy
    ) -> bool:
        namespace = task.metadata.namespace or ""
        code = copy.inline
        if code is None and copy.source_config_map:
            source = await self.client.get_or_none(
                k8s.CONFIGMAPS, copy.source_config_map, copy.source_namespace
            )
            code = ((source or {}).get("data") or {}).get(jobspec.CODE_KEY)
            if code is None:
                await self._pending(
                    body,
                    task,
                    "FunctionCodeNotFound",
                    f'ConfigMap "{copy.source_config_map}" with key {jobspec.CODE_KEY} not found '
                    f"in namespace {copy.source_namespace}",
                    event_reason="CreateTaskNotFound",
                )
                return False
        assert code is not None
        owner = {
            "apiVersion": lifecycle.API_VERSION,
            "kind": "KeptnTask",
            "name": task.metadata.name,
            "uid": task.metadata.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
        await write_configmap(self.client, namespace, copy.name, code, owner_references=[owner])
        return True

    async def _wait_for_definition(self, body: Body, task: lifecycle.KeptnTask, name: str) -> None:
        namespace = task.metadata.namespace or ""
        places = (
            namespace if namespace == self.klt_namespace else f"{namespace} or {self.klt_namespace}"
        )
        await self._pending(
            body,
            task,
            "TaskDefinitionNotFound",
            f"could not find KeptnTaskDefinition: {name} (looked in namespace {places})",
            event_reason="CreateTaskNotFound",
        )

    async def _pending(
        self,
        body: Body,
        task: lifecycle.KeptnTask,
        reason: str,
        message: str,
        *,
        event_reason: str,
    ) -> None:
        status = body.get("status") or {}
        if status.get("reason") == reason and status.get("message") == message:
            return  # already said so; the watches and the timer will bring it back
        await self._write_status(
            body,
            {
                "status": KeptnState.PENDING.value,
                "reason": reason,
                "message": message,
                "startTime": status.get("startTime") or _now(),
            },
        )
        self._record(body, task, "Warning", event_reason, "Create Task", message)

    async def _fail_without_job(
        self, body: Body, task: lifecycle.KeptnTask, reason: str, message: str
    ) -> None:
        result = outcome.Outcome(KeptnState.FAILED, reason, message)
        await self._publish(task, result)
        status = body.get("status") or {}
        written = await self._write_status(
            body,
            {
                "status": KeptnState.FAILED.value,
                "reason": reason,
                "message": message,
                "startTime": status.get("startTime") or _now(),
                "endTime": _now(),
            },
        )
        if written is not None:
            if self.meters is not None:
                self.meters.finished(written)
            self._record(body, task, "Warning", "CreateTaskFailed", "Create Task", message)

    async def _job_lost(self, body: Body, task: lifecycle.KeptnTask, job_name: str) -> None:
        await self._fail_without_job(
            body,
            task,
            "JobNotFound",
            f"the Job {job_name} was deleted before its result was recorded; the task is not "
            "run again",
        )

    async def _progress(self, body: Body, task: lifecycle.KeptnTask, job: Body) -> None:
        uid = task.metadata.uid or ""
        pods = self.pods.get(uid)
        problem = outcome.pod_problem(pods)
        if problem is None and not pods:
            # The stuck pod was deleted (the Job controller does so at the deadline): keep
            # saying why until the Job's outcome arrives.
            problem = self._problems.get(uid) or _recorded_problem(body.get("status") or {})
        elif problem is None:
            self._problems.pop(uid, None)
        status = body.get("status") or {}
        update: Body = {
            "status": KeptnState.PROGRESSING.value,
            "jobName": job["metadata"]["name"],
            "startTime": status.get("startTime") or _now(),
            "reason": problem.reason if problem else None,
            "message": problem.message if problem else None,
        }
        if problem is not None:
            self._problems[uid] = problem
        written = await self._write_status(body, update)
        if written is not None and problem is not None and status.get("message") != problem.message:
            self._record(
                body,
                task,
                "Warning",
                "ReconcileTaskReconcileError",
                "Reconcile Task",
                problem.message,
            )

    async def _finish(self, body: Body, task: lifecycle.KeptnTask, finish: _Finish) -> None:
        result = finish.outcome
        uid = task.metadata.uid or ""
        if result.state is KeptnState.FAILED:
            problem = self._problems.get(uid) or _recorded_problem(body.get("status") or {})
            if problem is not None and problem.message not in result.message:
                result = outcome.Outcome(
                    result.state, result.reason, f"{result.message} ({problem.message})"
                )
        await self._publish(task, result)
        log_tail = await self._final_log_tail(task, finish.job)
        status = body.get("status") or {}
        written = await self._write_status(
            body,
            {
                "status": result.state.value,
                "reason": result.reason or None,
                "message": result.message or None,
                "jobName": finish.job["metadata"]["name"],
                "startTime": status.get("startTime") or _now(),
                "endTime": _now(),
                "logTail": log_tail,
            },
        )
        self._forget(uid)
        if written is not None:
            if self.meters is not None:
                self.meters.finished(written)
            if result.state is KeptnState.SUCCEEDED:
                self._record(
                    body,
                    task,
                    "Normal",
                    "ReconcileTaskFinished",
                    "Reconcile Task",
                    "task succeeded",
                )
            else:
                self._record(
                    body,
                    task,
                    "Warning",
                    "ReconcileTaskFailed",
                    "Reconcile Task",
                    f"task failed: {result.reason}: {result.message}",
                )

    # -- side effects --------------------------------------------------------------------------

    async def _publish(self, task: lifecycle.KeptnTask, result: outcome.Outcome) -> None:
        context = task.spec.context or lifecycle.TaskContext()
        payload = events.TaskFinished(
            namespace=task.metadata.namespace or "",
            app=context.app_name or task.metadata.name or "",
            task_name=task.metadata.name or "",
            workload=context.workload_name or None,
            state=result.state,
            reason=result.reason[:32_768],
            message=result.message[:32_768],
        )
        # In the trace of the task's phase, which the scheduler put in the task's context.
        with in_trace(str((context.metadata or {}).get("traceparent") or "")):
            await self.publisher.publish(
                payload,
                source=self.source,
                event_id=outcome.finished_event_id(task.metadata.uid or "", result),
            )

    async def _write_status(self, body: Body, update: Body) -> Body | None:
        """Apply ``update`` to the task's status (see ``advance``); returns the stored task, or
        None when there was nothing to write. Retries on conflicts with a fresh read."""
        meta = body.get("metadata") or {}
        name, namespace = str(meta.get("name")), str(meta.get("namespace"))
        uid = str(meta.get("uid", ""))
        current_body = body
        ours = self._written.get(uid)
        if ours is not None:
            if advance(ours.get("status") or {}, update) is None:
                return None  # nothing beyond what this process already wrote
            if _newer(ours, body):
                current_body = ours
        for _ in range(5):
            current: Body = current_body.get("status") or {}
            merged = advance(current, update)
            if merged is None:
                return None
            delta = {
                k: merged.get(k) for k in {*current, *merged} if current.get(k) != merged.get(k)
            }
            patch = {
                "metadata": {
                    "resourceVersion": (current_body.get("metadata") or {}).get("resourceVersion")
                },
                "status": delta,
            }
            try:
                stored = await self.client.patch(
                    TASKS, name, patch, namespace, subresource="status"
                )
            except k8s.Conflict:
                fresh = await self.client.get_or_none(TASKS, name, namespace)
                if fresh is None:
                    return None
                current_body = fresh
            except k8s.NotFound:
                return None
            else:
                self._written[uid] = stored
                return stored
        raise k8s.Conflict(409, "Conflict", f"status of KeptnTask {namespace}/{name} kept changing")

    def _record(
        self,
        body: Body,
        task: lifecycle.KeptnTask,
        type_: events_recorder.EventType,
        reason: str,
        long_phase: str,
        text: str,
    ) -> None:
        context = task.spec.context or lifecycle.TaskContext()
        meta = task.metadata
        message = events_recorder.keptn_message(
            long_phase,
            text,
            namespace=meta.namespace or "",
            name=meta.name or "",
            version=context.workload_version or context.app_version or "",
        )
        annotations = {
            "namespace": meta.namespace or "",
            "name": meta.name or "",
            "phase": long_phase,
            "appName": context.app_name or "",
            "appVersion": context.app_version or "",
            "workloadName": context.workload_name or "",
            "workloadVersion": context.workload_version or "",
            "taskName": meta.name or "",
            "taskDefinitionName": task.spec.task_definition,
        }
        obj = {
            "apiVersion": lifecycle.API_VERSION,
            "kind": "KeptnTask",
            "metadata": body.get("metadata") or {},
        }
        self._spawn(
            self.recorder.record(
                obj, type_=type_, reason=reason, message=message, annotations=annotations
            )
        )

    # -- logs ----------------------------------------------------------------------------------

    async def _capture(
        self, uid: str, namespace: str, pod: str, container: str, job: Body | None
    ) -> None:
        """Keep the tail of a failed container's log, before the Job controller deletes the pod
        (it does as soon as the backoff limit or the deadline is reached)."""
        async with self._capture_gate:
            text = await self._read_tail(namespace, pod, container, job)
        if text is not None:
            self._log_tails[uid] = text

    async def _final_log_tail(self, task: lifecycle.KeptnTask, job: Body) -> str | None:
        namespace = task.metadata.namespace or ""
        uid = task.metadata.uid or ""
        pods = sorted(
            self.pods.get(uid),
            key=lambda p: str(p.get("metadata", {}).get("creationTimestamp", "")),
            reverse=True,
        )
        for pod in pods:
            for container in (pod.get("spec") or {}).get("containers") or []:
                text = await self._read_tail(
                    namespace, pod["metadata"]["name"], container["name"], job
                )
                if text:
                    return text
        return self._log_tails.get(uid)

    async def _read_tail(
        self, namespace: str, pod: str, container: str, job: Body | None
    ) -> str | None:
        try:
            raw = await pod_logs.read_log(
                self.client,
                namespace,
                pod,
                container,
                tail_lines=self.settings.log_tail_lines,
                limit_bytes=self.settings.log_tail_bytes * 4,
            )
        except k8s.ApiError as exc:
            _log.debug("no log for %s/%s/%s: %s", namespace, pod, container, exc)
            return None
        except Exception as exc:  # noqa: BLE001 - a log is a courtesy; its absence is not an error
            _log.debug("no log for %s/%s/%s: %s", namespace, pod, container, exc)
            return None
        text = outcome.tail(
            raw, lines=self.settings.log_tail_lines, limit_bytes=self.settings.log_tail_bytes
        )
        secrets = await self._secret_values(namespace, job)
        if secrets is None:
            return "[log tail withheld: a Secret given to the task could not be read to redact it]"
        return outcome.redact(text, secrets)

    async def _secret_values(self, namespace: str, job: Body | None) -> list[str] | None:
        refs: dict[str, set[str] | None] = {}
        for container in _containers(job):
            for item in container.get("env") or []:
                ref = (item.get("valueFrom") or {}).get("secretKeyRef")
                if ref and ref.get("name"):
                    keys = refs.setdefault(ref["name"], set())
                    if keys is not None:
                        keys.add(str(ref.get("key", "")))
            for source in container.get("envFrom") or []:
                ref = source.get("secretRef")
                if ref and ref.get("name"):
                    refs[ref["name"]] = None
        values: list[str] = []
        for name, keys in refs.items():
            try:
                secret = await self.client.get_or_none(k8s.SECRETS, name, namespace)
            except k8s.ApiError:
                return None
            if secret is not None:
                values.extend(outcome.secret_values(secret, keys))
        return values


def _containers(job: Body | None) -> Iterable[Body]:
    if job is None:
        return []
    spec = ((job.get("spec") or {}).get("template") or {}).get("spec") or {}
    return [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]


def _rv(obj: Body) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion", ""))


def _newer(a: Body, b: Body) -> bool:
    """Whether object ``a`` is a later version than ``b`` of the same object. The apiserver's
    resourceVersions are etcd revisions (integers); anything else counts as not newer."""
    try:
        return int(a["metadata"]["resourceVersion"]) > int(b["metadata"]["resourceVersion"])
    except (KeyError, TypeError, ValueError):
        return False


def _owned_by(job: Body, task_uid: str) -> bool:
    meta = job.get("metadata") or {}
    if (meta.get("labels") or {}).get(jobspec.LABEL_TASK_UID) == task_uid:
        return True
    return any(ref.get("uid") == task_uid for ref in meta.get("ownerReferences") or [])


def _recorded_problem(status: Body) -> outcome.PodProblem | None:
    reason = status.get("reason")
    if reason in outcome.STUCK_REASONS or reason == "Unschedulable":
        return outcome.PodProblem(str(reason), str(status.get("message") or ""))
    return None
