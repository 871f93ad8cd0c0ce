"""``GET /api/v1/metrics/{namespace}/{metric}``: a KeptnMetric's value for KEDA.

The answer is Keptn's: ``{"namespace": ..., "metric": ..., "value": "..."}``, the value being
``status.value`` as a string. KEDA's ``metrics-api`` scaler reads it with
``valueLocation: value``. The route is served on the service's probe port next to ``/metrics``.

A metric is answered from the watch cache; one outside this evaluator's shard (or not yet in the
cache) is read live, so the endpoint answers for every KeptnMetric in the cluster. 404 when the
metric does not exist, 503 when it has no value yet (its errMsg is in the body).
"""

from __future__ import annotations

from aiohttp import web

from klt_common.clients import cluster as k8s
from klt_evaluator.lookups import METRICS


def routes(cluster: k8s.ClusterClient, cache: k8s.WatchCache) -> list[web.RouteDef]:
    async def metric_value(request: web.Request) -> web.Response:
        namespace = request.match_info["namespace"]
        name = request.match_info["metric"]
        body = cache.get(name, namespace)
        if body is None:
            try:
                body = await cluster.get_or_none(METRICS, name, namespace)
            except k8s.ApiError as exc:
                return web.json_response({"error": f"cannot read the metric: {exc}"}, status=502)
        if body is None:
            return web.json_response(
                {"error": f"KeptnMetric {name!r} not found in namespace {namespace}"}, status=404
            )
        status = body.get("status") or {}
        value = str(status.get("value") or "")
        if not value:
            reason = status.get("errMsg") or "the metric has not been fetched yet"
            return web.json_response(
                {"namespace": namespace, "metric": name, "value": "", "error": reason}, status=503
            )
        return web.json_response({"namespace": namespace, "metric": name, "value": value})

    return [web.get("/api/v1/metrics/{namespace}/{metric}", metric_value)]
