"""Reading container logs through the apiserver's ``pods/log`` subresource.

``ClusterClient.request`` decodes JSON; a log is plain text, so it gets its own small function
here, next to the client, with the same error mapping (``ApiError`` subclasses) and the same
retries for connection errors, 5xx and 429.
"""

from __future__ import annotations

import json

from klt_common.aiokits.retry import retry
from klt_common.clients import cluster as k8s

__all__ = ["read_log"]


async def read_log(
    client: k8s.ClusterClient,
    namespace: str,
    pod: str,
    container: str,
    *,
    tail_lines: int | None = None,
    limit_bytes: int | None = None,
) -> str:
    """The log of one container of one pod, decoded as UTF-8 (invalid bytes replaced).

    Args:
        client: the cluster client.
        namespace: the pod's namespace.
        pod: the pod's name.
        container: the container's name (required when the pod has several).
        tail_lines: only the last this many lines (applied by the kubelet, before
            ``limit_bytes``).
        limit_bytes: at most this many bytes from the start of what remains; bounds memory
            whatever the container printed.

    Raises:
        NotFound: the pod or container does not exist.
        ApiError: any other refusal; ``temporary`` ones after the client's retries.
    """
    query: list[tuple[str, str]] = [("container", container)]
    if tail_lines is not None:
        query.append(("tailLines", str(tail_lines)))
    if limit_bytes is not None:
        query.append(("limitBytes", str(limit_bytes)))
    path = k8s.PODS.path(namespace, pod, "log")

    async def attempt() -> str:
        response = await client._send("GET", path, query=query, content_type="text/plain")
        async with response:
            raw = await response.read()
            if 200 <= response.status < 300:
                return raw.decode("utf-8", errors="replace")
            text = raw.decode("utf-8", errors="replace")
            try:
                payload = json.loads(text)
            except ValueError:
                payload = None
            raise k8s._error_from(
                response.status, payload if isinstance(payload, dict) else None, text
            )

    return await retry(
        attempt,
        delays=client.settings.retry_delays,
        what=f"GET log of {namespace}/{pod}/{container}",
        is_temporary=k8s._is_temporary,
    )
