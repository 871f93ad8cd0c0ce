"""The cluster client: a thin, typed layer over kubernetes_asyncio.

kubernetes_asyncio gives us configuration loading (kubeconfig, in-cluster service account,
exec plugins, token refresh) and an authenticated aiohttp session. Its generated per-kind API
classes are not used: klt works with Keptn's custom resources and a handful of built-in kinds,
so one generic path builder (``Resource``) serves them all and keeps objects as plain dicts at
this layer. Callers that want models convert at their edge with ``Typed``.

Failure handling lives here so that no service writes its own:

- connection errors, 5xx and 429 are retried after each delay in ``ClusterSettings.retry_delays``
  (honouring ``Retry-After``), then raised as ``ApiError`` with ``temporary=True``;
- 409 Conflict on a read-modify-write is retried by ``update`` with a fresh read;
- every other status is raised at once as a typed ``ApiError`` subclass.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

import aiohttp
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config
from pydantic import BaseModel

from klt_common.aiokits.retry import retry, sleep_or_stop
from klt_common.configs.settings import ClusterSettings
from klt_common.structs import api

_log = logging.getLogger(__name__)

Body = dict[str, Any]
PatchKind = Literal["merge", "json", "strategic", "apply"]

_PATCH_CONTENT_TYPES: dict[str, str] = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "apply": "application/apply-patch+yaml",
}


@dataclass(frozen=True)
class Resource:
    """Identifies one API resource: enough to build its REST paths."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(
        self,
        namespace: str | None = None,
        name: str | None = None,
        subresource: str | None = None,
    ) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace is not None:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{name}"
            if subresource is not None:
                base += f"/{subresource}"
        return base


# Built-in kinds the services and the dev stack use.
NAMESPACES = Resource("", "v1", "namespaces", "Namespace", namespaced=False)
PODS = Resource("", "v1", "pods", "Pod")
CONFIGMAPS = Resource("", "v1", "configmaps", "ConfigMap")
SECRETS = Resource("", "v1", "secrets", "Secret")
SERVICE_ACCOUNTS = Resource("", "v1", "serviceaccounts", "ServiceAccount")
EVENTS = Resource("", "v1", "events", "Event")
NODES = Resource("", "v1", "nodes", "Node", namespaced=False)
JOBS = Resource("batch", "v1", "jobs", "Job")
DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment")
REPLICASETS = Resource("apps", "v1", "replicasets", "ReplicaSet")
STATEFULSETS = Resource("apps", "v1", "statefulsets", "StatefulSet")
DAEMONSETS = Resource("apps", "v1", "daemonsets", "DaemonSet")
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease")
CRDS = Resource(
    "apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False
)
MUTATING_WEBHOOKS = Resource(
    "admissionregistration.k8s.io",
    "v1",
    "mutatingwebhookconfigurations",
    "MutatingWebhookConfiguration",
    namespaced=False,
)
VALIDATING_WEBHOOKS = Resource(
    "admissionregistration.k8s.io",
    "v1",
    "validatingwebhookconfigurations",
    "ValidatingWebhookConfiguration",
    namespaced=False,
)


class ApiError(Exception):
    """A request the apiserver refused, or could not be reached for."""

    def __init__(self, status: int, reason: str, message: str, *, temporary: bool = False) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.temporary = temporary


class NotFound(ApiError):
    """404: the object (or its namespace, or its kind) does not exist."""


class AlreadyExists(ApiError):
    """409 AlreadyExists on create."""


class Conflict(ApiError):
    """409 Conflict: the resourceVersion we sent is stale."""


class Gone(ApiError):
    """410: the resourceVersion is too old to watch from; relist."""


class Invalid(ApiError):
    """422 or 400: the apiserver rejected the object; retrying cannot help."""


class Forbidden(ApiError):
    """403: RBAC does not allow this request."""


def _error_from(status: int, payload: Mapping[str, Any] | None, text: str) -> ApiError:
    reason = str(payload.get("reason", "")) if payload else ""
    message = str(payload.get("message", text)) if payload else text
    if status == 404:
        return NotFound(status, reason or "NotFound", message)
    if status == 409:
        if reason == "AlreadyExists":
            return AlreadyExists(status, reason, message)
        return Conflict(status, reason or "Conflict", message)
    if status == 410:
        return Gone(status, reason or "Gone", message)
    if status in (400, 422):
        return Invalid(status, reason or "Invalid", message)
    if status == 403:
        return Forbidden(status, reason or "Forbidden", message)
    temporary = status == 429 or status >= 500
    return ApiError(status, reason or "Error", message, temporary=temporary)


def _is_temporary(exc: BaseException) -> bool:
    if isinstance(exc, ApiError):
        return exc.temporary
    return isinstance(exc, aiohttp.ClientConnectionError | asyncio.TimeoutError | TimeoutError)


@dataclass(frozen=True)
class ObjectList:
    """The items of a list call and the resourceVersion to watch from."""

    items: list[Body]
    resource_version: str


@dataclass(frozen=True)
class WatchEvent:
    """One event of a watch stream: ADDED, MODIFIED, DELETED or BOOKMARK."""

    type: str
    object: Body


class ClusterClient:
    """Authenticated access to one apiserver. Create with ``connect``; close when done."""

    def __init__(self, api: k8s_client.ApiClient, settings: ClusterSettings) -> None:
        self._api = api
        self._settings = settings

    @classmethod
    async def connect(cls, settings: ClusterSettings) -> ClusterClient:
        """Load the kubeconfig (or the in-cluster service account) and open a session."""
        configuration = k8s_client.Configuration()
        if settings.kubeconfig:
            await k8s_config.load_kube_config(
                config_file=settings.kubeconfig, client_configuration=configuration
            )
        else:
            k8s_config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration
            )
        return cls(k8s_client.ApiClient(configuration=configuration), settings)

    async def close(self) -> None:
        await self._api.close()

    async def __aenter__(self) -> ClusterClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def settings(self) -> ClusterSettings:
        return self._settings

    # -- raw requests -------------------------------------------------------------------------

    async def _send(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | aiohttp.ClientTimeout | None = None,
    ) -> aiohttp.ClientResponse:
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        response: aiohttp.ClientResponse = await self._api.call_api(
            path,
            method,
            query_params=list(query),
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=timeout if timeout is not None else self._settings.request_timeout,
        )
        return response

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Any = None,
        content_type: str = "application/json",
        retry_temporary: bool = True,
    ) -> Body:
        """Send one request and return the decoded JSON body; errors become ``ApiError``."""

        async def attempt() -> Body:
            response = await self._send(
                method, path, query=query, body=body, content_type=content_type
            )
            async with response:
                text = await response.text()
                payload: Any = None
                if text:
                    try:
                        payload = json.loads(text)
                    except ValueError:
                        payload = None
                if 200 <= response.status < 300:
                    return payload if isinstance(payload, dict) else {}
                error = _error_from(
                    response.status, payload if isinstance(payload, dict) else None, text
                )
                if response.status == 429 and (hint := response.headers.get("Retry-After")):
                    _log.debug("apiserver asked to retry after %ss", hint)
                raise error

        delays = self._settings.retry_delays if retry_temporary else ()
        return await retry(
            attempt, delays=delays, what=f"{method} {path}", is_temporary=_is_temporary
        )

    # -- verbs --------------------------------------------------------------------------------

    async def get(self, res: Resource, name: str, namespace: str | None = None) -> Body:
        return await self.request("GET", res.path(namespace, name))

    async def get_or_none(
        self, res: Resource, name: str, namespace: str | None = None
    ) -> Body | None:
        try:
            return await self.get(res, name, namespace)
        except NotFound:
            return None

    async def list(
        self,
        res: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> ObjectList:
        query: list[tuple[str, str]] = []
        if label_selector:
            query.append(("labelSelector", label_selector))
        if field_selector:
            query.append(("fieldSelector", field_selector))
        body = await self.request("GET", res.path(namespace), query=query)
        items: list[Body] = body.get("items") or []
        for item in items:
            # List items come without apiVersion/kind; put them back so every object this client
            # returns is self-describing.
            item.setdefault("apiVersion", res.api_version)
            item.setdefault("kind", res.kind)
        return ObjectList(items, str(body.get("metadata", {}).get("resourceVersion", "")))

    async def create(
        self, res: Resource, body: Body, namespace: str | None = None, *, dry_run: bool = False
    ) -> Body:
        ns = namespace if namespace is not None else body.get("metadata", {}).get("namespace")
        query = [("dryRun", "All")] if dry_run else []
        return await self.request("POST", res.path(ns), body=body, query=query)

    async def replace(self, res: Resource, body: Body, *, subresource: str | None = None) -> Body:
        meta = body["metadata"]
        return await self.request(
            "PUT", res.path(meta.get("namespace"), meta["name"], subresource), body=body
        )

    async def patch(
        self,
        res: Resource,
        name: str,
        patch: Any,
        namespace: str | None = None,
        *,
        kind: PatchKind = "merge",
        subresource: str | None = None,
        field_manager: str | None = None,
        force: bool = False,
    ) -> Body:
        query: list[tuple[str, str]] = []
        if field_manager:
            query.append(("fieldManager", field_manager))
        if force:
            query.append(("force", "true"))
        return await self.request(
            "PATCH",
            res.path(namespace, name, subresource),
            body=patch,
            query=query,
            content_type=_PATCH_CONTENT_TYPES[kind],
        )

    async def patch_status(
        self, res: Resource, name: str, status: Body, namespace: str | None = None
    ) -> Body:
        """Merge-patch the status subresource."""
        return await self.patch(res, name, {"status": status}, namespace, subresource="status")

    async def delete(
        self,
        res: Resource,
        name: str,
        namespace: str | None = None,
        *,
        propagation: Literal["Foreground", "Background", "Orphan"] = "Background",
        missing_ok: bool = True,
    ) -> None:
        try:
            await self.request(
                "DELETE",
                res.path(namespace, name),
                body={
                    "kind": "DeleteOptions",
                    "apiVersion": "v1",
                    "propagationPolicy": propagation,
                },
            )
        except NotFound:
            if not missing_ok:
                raise

    async def update(
        self,
        res: Resource,
        name: str,
        namespace: str | None,
        mutate: Callable[[Body], Body | None] | Callable[[Body], Awaitable[Body | None]],
        *,
        subresource: str | None = None,
    ) -> Body | None:
        """Read-modify-write with optimistic concurrency.

        ``mutate`` gets a fresh copy of the object and returns the new object (or None to leave
        it unchanged). The write carries the resourceVersion that was read, so a concurrent
        writer makes it fail with 409, and the whole cycle repeats with a new read, up to
        ``conflict_retries`` times. Returns the stored object, or None when nothing changed.
        """
        for attempt in range(1, self._settings.conflict_retries + 1):
            current = await self.get(res, name, namespace)
            result = mutate(json.loads(json.dumps(current)))
            changed = await result if asyncio.iscoroutine(result) else result
            if changed is None or changed == current:
                return None
            assert isinstance(changed, dict)
            try:
                return await self.replace(res, changed, subresource=subresource)
            except Conflict:
                _log.debug("conflict updating %s/%s (attempt %d)", namespace, name, attempt)
                if attempt == self._settings.conflict_retries:
                    raise
        raise AssertionError("unreachable")

    async def watch(
        self,
        res: Resource,
        namespace: str | None = None,
        *,
        resource_version: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout_seconds: int | None = None,
    ) -> AsyncGenerator[WatchEvent, None]:
        """Stream watch events until the server ends the request.

        Raises ``Gone`` when the resourceVersion has expired (either as an HTTP 410 or as an
        ERROR event in the stream); the caller relists. Bookmarks are requested so that a quiet
        resource still advances the resourceVersion we resume from.
        """
        query: list[tuple[str, str]] = [("watch", "true"), ("allowWatchBookmarks", "true")]
        if resource_version:
            query.append(("resourceVersion", resource_version))
        if label_selector:
            query.append(("labelSelector", label_selector))
        if field_selector:
            query.append(("fieldSelector", field_selector))
        server_timeout = timeout_seconds or self._settings.watch_timeout
        query.append(("timeoutSeconds", str(server_timeout)))
        response = await self._send(
            "GET",
            res.path(namespace),
            query=query,
            # The server closes the stream after timeoutSeconds; the client only guards against
            # a stream that goes silent, so it allows a little longer than that.
            timeout=aiohttp.ClientTimeout(total=None, sock_read=server_timeout + 30),
        )
        async with response:
            if response.status != 200:
                text = await response.text()
                try:
                    payload = json.loads(text)
                except ValueError:
                    payload = None
                raise _error_from(response.status, payload, text)
            while True:
                line = await response.content.readline()
                if not line:
                    return
                event = json.loads(line)
                etype = event.get("type", "")
                obj = event.get("object") or {}
                if etype == "ERROR":
                    code = int(obj.get("code", 500))
                    raise _error_from(code, obj, str(obj.get("message", "")))
                yield WatchEvent(etype, obj)


M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Typed(Generic[M]):
    """Model-typed access to one resource kind through a ``ClusterClient``."""

    client: ClusterClient
    resource: Resource
    model: type[M]

    def _load(self, body: Body) -> M:
        return self.model.model_validate(body)

    def _dump(self, obj: M) -> Body:
        dumped: Body = obj.model_dump(mode="json", by_alias=True, exclude_none=True)
        return dumped

    async def get(self, name: str, namespace: str | None = None) -> M:
        return self._load(await self.client.get(self.resource, name, namespace))

    async def get_or_none(self, name: str, namespace: str | None = None) -> M | None:
        body = await self.client.get_or_none(self.resource, name, namespace)
        return None if body is None else self._load(body)

    async def list(self, namespace: str | None = None, **selectors: str) -> list[M]:
        result = await self.client.list(self.resource, namespace, **selectors)
        return [self._load(item) for item in result.items]

    async def create(self, obj: M, namespace: str | None = None) -> M:
        return self._load(await self.client.create(self.resource, self._dump(obj), namespace))

    async def patch(self, name: str, patch: Any, namespace: str | None = None) -> M:
        return self._load(await self.client.patch(self.resource, name, patch, namespace))

    async def patch_status(self, name: str, status: Body, namespace: str | None = None) -> M:
        return self._load(await self.client.patch_status(self.resource, name, status, namespace))

    async def replace_status(self, obj: M) -> M:
        return self._load(
            await self.client.replace(self.resource, self._dump(obj), subresource="status")
        )

    async def watch(
        self, namespace: str | None = None, *, resource_version: str | None = None
    ) -> AsyncIterator[tuple[str, M]]:
        async for event in self.client.watch(
            self.resource, namespace, resource_version=resource_version
        ):
            if event.type != "BOOKMARK":
                yield event.type, self._load(event.object)


@dataclass
class WatchCache:
    """A local, always-current copy of one resource kind, fed by list + watch.

    ``run`` lists once, then watches from the list's resourceVersion, resuming from the last
    seen resourceVersion (bookmarks included) whenever the stream ends or the connection drops.
    When the apiserver answers 410 Gone the cache relists and reports the difference as
    events, so subscribers never miss a deletion that happened while the stream was down.
    Readers use ``get`` and ``values`` without any apiserver round trip, which is what keeps
    hot paths such as admission free of synchronous API calls.
    """

    client: ClusterClient
    resource: Resource
    namespace: str | None = None
    label_selector: str | None = None
    field_selector: str | None = None
    retry_delays: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0)
    _store: dict[tuple[str, str], Body] = field(default_factory=dict)
    _synced: asyncio.Event = field(default_factory=asyncio.Event)
    _subscribers: list[asyncio.Queue[WatchEvent]] = field(default_factory=list)
    resource_version: str = ""
    relists: int = 0

    @staticmethod
    def key_of(obj: Body) -> tuple[str, str]:
        meta = obj.get("metadata", {})
        return (str(meta.get("namespace", "")), str(meta.get("name", "")))

    def get(self, name: str, namespace: str | None = None) -> Body | None:
        return self._store.get((namespace or "", name))

    def values(self) -> list[Body]:
        return list(self._store.values())

    def subscribe(self) -> asyncio.Queue[WatchEvent]:
        """A queue receiving every change after the initial list (and synthetic ones on relist)."""
        queue: asyncio.Queue[WatchEvent] = asyncio.Queue()
        self._subscribers.append(queue)
        return queue

    async def wait_synced(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._synced.wait(), timeout)

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    def _publish(self, event: WatchEvent) -> None:
        for queue in self._subscribers:
            queue.put_nowait(event)

    async def _relist(self) -> None:
        listed = await self.client.list(
            self.resource,
            self.namespace,
            label_selector=self.label_selector,
            field_selector=self.field_selector,
        )
        fresh = {self.key_of(item): item for item in listed.items}
        if self._synced.is_set():
            for key, old in list(self._store.items()):
                if key not in fresh:
                    self._publish(WatchEvent("DELETED", old))
            for key, new in fresh.items():
                old_obj = self._store.get(key)
                if old_obj is None:
                    self._publish(WatchEvent("ADDED", new))
                elif _rv(old_obj) != _rv(new):
                    self._publish(WatchEvent("MODIFIED", new))
        self._store = fresh
        self.resource_version = listed.resource_version
        self.relists += 1
        self._synced.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Keep the cache current until ``stop`` is set."""
        failures = 0
        need_list = True
        while not stop.is_set():
            try:
                if need_list:
                    await self._relist()
                    need_list = False
                await self._stream(stop)
                failures = 0
            except Gone:
                _log.info("watch of %s expired (410); relisting", self.resource.plural)
                need_list = True
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure restarts the watch after a delay
                delay = self.retry_delays[min(failures, len(self.retry_delays) - 1)]
                failures += 1
                _log.warning(
                    "watch of %s failed (%s); resuming in %.1fs", self.resource.plural, exc, delay
                )
                await sleep_or_stop(delay, stop)

    async def _stream(self, stop: asyncio.Event) -> None:
        stream = self.client.watch(
            self.resource,
            self.namespace,
            resource_version=self.resource_version,
            label_selector=self.label_selector,
            field_selector=self.field_selector,
        )
        stop_wait = asyncio.ensure_future(stop.wait())
        try:
            iterator = stream.__aiter__()
            while True:
                nxt = asyncio.ensure_future(iterator.__anext__())
                done, _ = await asyncio.wait({nxt, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                if nxt not in done:
                    nxt.cancel()
                    await asyncio.gather(nxt, return_exceptions=True)
                    return
                try:
                    event = nxt.result()
                except StopAsyncIteration:
                    return
                self._apply(event)
        finally:
            stop_wait.cancel()
            await asyncio.gather(stop_wait, return_exceptions=True)
            await stream.aclose()

    def _apply(self, event: WatchEvent) -> None:
        rv = _rv(event.object)
        if rv:
            self.resource_version = rv
        if event.type == "BOOKMARK":
            return
        key = self.key_of(event.object)
        if event.type == "DELETED":
            self._store.pop(key, None)
        else:
            self._store[key] = event.object
        self._publish(event)


def _rv(obj: Body) -> str:
    return str(obj.get("metadata", {}).get("resourceVersion", ""))


def keptn_resource(kind: str) -> Resource:
    """The ``Resource`` of a Keptn kind (``"KeptnApp"``), from the model registry."""
    rk = api.by_kind(kind)
    return Resource(rk.group, rk.version, rk.plural, rk.kind, rk.namespaced)


def typed(client: ClusterClient, kind: str) -> Typed[api.KeptnResource]:
    """Model-typed access to a Keptn kind; narrow with ``Typed(client, res, Model)`` instead
    when the concrete model class is known statically."""
    rk = api.by_kind(kind)
    return Typed(client, keptn_resource(kind), rk.model)
