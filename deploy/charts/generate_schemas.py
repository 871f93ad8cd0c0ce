"""Writes the values.schema.json files of the klt chart and its subcharts.

Helm validates a chart's values against its ``values.schema.json``, and a subchart's against its
own. The five service subcharts share most of their values (replicas, image, autoscaling, ...),
and Helm cannot reference one schema file from another, so the schemas are generated from the
definitions below instead of being copied by hand:

- ``deploy/charts/klt/values.schema.json``: the umbrella chart, strict everywhere (unknown keys
  are rejected, so a typo fails ``helm install`` instead of being silently ignored);
- ``deploy/charts/klt/charts/<subchart>/values.schema.json``: the same definitions for each
  subchart's part of the values, plus the ``global`` section Helm passes down.

Run ``uv run python deploy/charts/generate_schemas.py`` after changing values; ``--check``
(used by ``tests/unit/chart``) fails when a file is out of date.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

CHART = Path(__file__).resolve().parent / "klt"
DRAFT = "http://json-schema.org/draft-07/schema#"

Schema = dict[str, Any]


def strict(properties: dict[str, Schema], *, required: bool = True, **extra: Any) -> Schema:
    """An object with exactly these keys (all required unless ``required`` is false)."""
    schema: Schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
    }
    if required:
        schema["required"] = sorted(properties)
    schema.update(extra)
    return schema


def string(**extra: Any) -> Schema:
    return {"type": "string", **extra}


def integer(minimum: int | None = None, maximum: int | None = None) -> Schema:
    schema: Schema = {"type": "integer"}
    if minimum is not None:
        schema["minimum"] = minimum
    if maximum is not None:
        schema["maximum"] = maximum
    return schema


BOOLEAN: Schema = {"type": "boolean"}
STRING_MAP: Schema = {"type": "object", "additionalProperties": {"type": "string"}}
OBJECT: Schema = {"type": "object"}
OBJECT_LIST: Schema = {"type": "array", "items": {"type": "object"}}
DNS_LABEL = string(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", maxLength=63)
DNS_SUBDOMAIN = string(
    pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$", maxLength=253
)
NAMESPACES: Schema = {"type": "array", "items": DNS_LABEL, "uniqueItems": True}
QUANTITY: Schema = {"type": ["string", "number"]}
GO_DURATION = string(pattern=r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$")
PORT = integer(1, 65535)
INT_OR_PERCENT: Schema = {
    "oneOf": [integer(0), string(pattern=r"^[0-9]+%$"), {"type": "null"}],
}

RESOURCES: Schema = strict(
    {
        "requests": {"type": "object", "additionalProperties": QUANTITY},
        "limits": {"type": "object", "additionalProperties": QUANTITY},
    },
    required=False,
)


def image(*, with_digest: bool = True) -> Schema:
    properties: dict[str, Schema] = {
        "repository": string(minLength=1),
        "tag": string(),
        "pullPolicy": {"enum": ["", "Always", "IfNotPresent", "Never"]},
    }
    if with_digest:
        properties["digest"] = string(pattern=r"^(sha256:[a-f0-9]{64})?$")
    return strict(properties)


AUTOSCALING = strict(
    {
        "enabled": BOOLEAN,
        "minReplicas": integer(1),
        "maxReplicas": integer(1),
        "targetCPUUtilizationPercentage": integer(1, 100),
    },
    description="An HPA on CPU (or, with keda.enabled, a CPU trigger of the ScaledObject).",
)

KEDA = strict(
    {
        "enabled": BOOLEAN,
        # Never zero: the services also reconcile from watch caches.
        "minReplicas": integer(1),
        "maxReplicas": integer(1),
        "lagThreshold": integer(1),
        "activationLagThreshold": integer(0),
        "pollingInterval": integer(1),
        "cooldownPeriod": integer(0),
        "offsetResetPolicy": {"enum": ["earliest", "latest"]},
        "authenticationRef": string(),
    },
    description="A KEDA ScaledObject on the consumer group's lag.",
)

PDB = strict(
    {"enabled": BOOLEAN, "minAvailable": INT_OR_PERCENT, "maxUnavailable": INT_OR_PERCENT},
    required=False,
)

SERVICE_ACCOUNT = strict({"create": BOOLEAN, "name": string(), "annotations": STRING_MAP})

LOG_LEVEL: Schema = {"enum": ["", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]}


def service(specific: dict[str, Schema], *, consumer: bool) -> Schema:
    """One klt service's values (without ``global``)."""
    properties: dict[str, Schema] = {
        "enabled": BOOLEAN,
        "replicas": integer(0),
        "image": image(),
        "resources": RESOURCES,
        "autoscaling": AUTOSCALING,
        "pdb": PDB,
        "serviceAccount": SERVICE_ACCOUNT,
        "rbac": strict({"create": BOOLEAN}),
        "networkPolicy": strict({"extraIngress": OBJECT_LIST, "extraEgress": OBJECT_LIST}),
        "podAnnotations": STRING_MAP,
        "podLabels": STRING_MAP,
        "nodeSelector": STRING_MAP,
        "tolerations": OBJECT_LIST,
        "affinity": OBJECT,
        "topologySpreadConstraints": OBJECT_LIST,
        "priorityClassName": string(),
        "terminationGracePeriodSeconds": integer(1),
        "shutdownGraceSeconds": {"type": "number", "exclusiveMinimum": 0},
        "logLevel": LOG_LEVEL,
        "extraSettings": {
            "type": "object",
            "description": "KLT_<key> environment variables, e.g. AGGREGATION__WORKERS.",
            "propertyNames": {"pattern": r"^[A-Z][A-Z0-9]*(_{1,2}[A-Z0-9]+)*$"},
            "additionalProperties": {"type": ["string", "number", "boolean"]},
        },
        "extraEnv": {
            "type": "array",
            "items": {"type": "object", "required": ["name"], "properties": {"name": string()}},
        },
    }
    if consumer:
        properties["keda"] = KEDA
    properties.update(specific)
    return strict(properties)


WEBHOOK = service(
    {
        "failurePolicy": {"enum": ["Fail", "Ignore"]},
        "timeoutSeconds": integer(1, 30),
        "podOperations": {
            "type": "array",
            "items": {"enum": ["CREATE", "UPDATE"]},
            "minItems": 1,
            "uniqueItems": True,
        },
        "allowedNamespaces": NAMESPACES,
        "deniedNamespaces": NAMESPACES,
        "manageCrdConversion": BOOLEAN,
        "admissionPort": {**PORT, "not": {"const": 8080}},
        "certSecretName": DNS_SUBDOMAIN,
        "certManager": strict(
            {
                "issuerRef": strict(
                    {
                        "name": string(minLength=1),
                        "kind": {"enum": ["Issuer", "ClusterIssuer"]},
                        "group": string(),
                    },
                    required=False,
                ),
                "duration": GO_DURATION,
                "renewBefore": GO_DURATION,
            }
        ),
    },
    consumer=False,
)

RUNTIME = strict({"repository": string(minLength=1), "tag": string()})

TASK_RUNNER = service(
    {
        "runtimes": strict({"deno": RUNTIME, "python": RUNTIME}),
        "secretAccess": strict({"namespaces": NAMESPACES}),
    },
    consumer=True,
)

EVALUATOR = service(
    {
        "secretAccess": strict(
            {
                "releaseNamespace": BOOLEAN,
                "namespaces": NAMESPACES,
                "secretNames": {"type": "array", "items": DNS_SUBDOMAIN, "uniqueItems": True},
            }
        ),
    },
    consumer=True,
)

APP_AGGREGATOR = service({}, consumer=True)
SCHEDULER = service({}, consumer=True)

CRDS = strict({"enabled": BOOLEAN, "keep": BOOLEAN})

KAFKA = strict(
    {
        "image": image(with_digest=False),
        "clusterId": string(pattern=r"^[A-Za-z0-9_-]{22}$"),
        "heapOpts": string(),
        "logRetentionHours": integer(1),
        "resources": RESOURCES,
        "persistence": strict({"enabled": BOOLEAN, "size": QUANTITY, "storageClass": string()}),
        "podAnnotations": STRING_MAP,
        "nodeSelector": STRING_MAP,
        "tolerations": OBJECT_LIST,
        "affinity": OBJECT,
        "priorityClassName": string(),
    }
)

DASHBOARDS = strict({"enabled": BOOLEAN, "labels": STRING_MAP, "annotations": STRING_MAP})

CIDRS: Schema = {"type": "array", "items": string(minLength=1)}
PORTS: Schema = {"type": "array", "items": PORT}

GLOBAL = strict(
    {
        "fullnameOverride": string(maxLength=40),
        "image": strict(
            {
                "registry": string(),
                "tag": string(),
                "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
            }
        ),
        "imagePullSecrets": {
            "type": "array",
            "items": strict({"name": string(minLength=1)}),
        },
        "commonLabels": STRING_MAP,
        "kafka": strict(
            {
                "bundled": BOOLEAN,
                "bootstrapServers": string(),
                "topicPrefix": string(pattern=r"^[A-Za-z0-9._-]*$"),
                "partitions": integer(1),
                "replicationFactor": integer(1),
            },
            allOf=[
                {
                    "if": {"properties": {"bundled": {"const": False}}},
                    "then": {"properties": {"bootstrapServers": {"minLength": 1}}},
                },
                {
                    # One broker cannot hold more than one replica of a partition.
                    "if": {"properties": {"bundled": {"const": True}}},
                    "then": {"properties": {"replicationFactor": {"const": 1}}},
                },
            ],
        ),
        "observability": strict(
            {"logLevel": LOG_LEVEL, "logJson": BOOLEAN, "otlpEndpoint": string()}
        ),
        "certManager": strict({"enabled": BOOLEAN}),
        "serviceMonitor": strict(
            {
                "enabled": BOOLEAN,
                "interval": GO_DURATION,
                "scrapeTimeout": GO_DURATION,
                "labels": STRING_MAP,
            }
        ),
        "networkPolicy": strict(
            {
                "enabled": BOOLEAN,
                "metricsFrom": OBJECT_LIST,
                "egress": strict(
                    {
                        "enabled": BOOLEAN,
                        "dns": BOOLEAN,
                        "apiServer": strict({"cidrs": CIDRS, "ports": PORTS}),
                        "kafka": strict({"cidrs": CIDRS, "ports": PORTS}),
                    }
                ),
            }
        ),
        "podSecurityContext": OBJECT,
        "containerSecurityContext": OBJECT,
    }
)

# Subchart directory -> (key in the umbrella's values, schema of that part).
SUBCHARTS: dict[str, tuple[str, Schema]] = {
    "crds": ("crds", CRDS),
    "webhook": ("webhook", WEBHOOK),
    "app-aggregator": ("appAggregator", APP_AGGREGATOR),
    "task-runner": ("taskRunner", TASK_RUNNER),
    "evaluator": ("evaluator", EVALUATOR),
    "scheduler": ("scheduler", SCHEDULER),
    "kafka": ("kafka", KAFKA),
}


def umbrella() -> Schema:
    properties: dict[str, Schema] = {"global": GLOBAL}
    for key, schema in SUBCHARTS.values():
        # Helm copies the globals into each subchart's part before validating.
        properties[key] = {**schema, "properties": {**schema["properties"], "global": OBJECT}}
    properties["dashboards"] = DASHBOARDS
    schema = strict(properties)
    # The library chart's (empty) part of the values, which Helm adds as for any dependency.
    schema["properties"]["klt-lib"] = OBJECT
    return {"$schema": DRAFT, "title": "klt chart values", **schema}


def subchart(key: str, schema: Schema) -> Schema:
    """A subchart's schema: its part of the umbrella's values, plus the globals passed down.

    The globals are checked (strictly) by the umbrella's schema; here they are only allowed.
    """
    properties = {**schema["properties"], "global": OBJECT}
    result = {
        "$schema": DRAFT,
        "title": f"klt chart values: {key} (set under `{key}:` in the umbrella chart)",
        **schema,
        "properties": properties,
    }
    return result


def rendered() -> dict[Path, str]:
    files = {CHART / "values.schema.json": umbrella()}
    for directory, (key, schema) in SUBCHARTS.items():
        files[CHART / "charts" / directory / "values.schema.json"] = subchart(key, schema)
    return {path: json.dumps(schema, indent=2) + "\n" for path, schema in files.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a file is out of date")
    args = parser.parse_args(argv)
    stale = []
    for path, text in rendered().items():
        current = path.read_text() if path.is_file() else None
        if current == text:
            continue
        stale.append(path)
        if not args.check:
            path.write_text(text)
    if args.check and stale:
        names = ", ".join(str(p.relative_to(CHART.parent)) for p in stale)
        print(f"out of date: {names}; run deploy/charts/generate_schemas.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
