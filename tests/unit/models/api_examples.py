"""One complete object per Keptn kind, as the apiserver would return it.

Each example carries server-set metadata, a spec with every commonly used field, a status, and
the defaults the apiserver fills in, so ``model -> dict`` must reproduce it byte for byte.
"""

from __future__ import annotations

from typing import Any


def _meta(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": "podtato-kubectl",
        "uid": "7b5a2f0c-3c3e-4a56-9d1f-0d6f3f2c9b11",
        "resourceVersion": "48213",
        "generation": 2,
        "creationTimestamp": "2024-05-06T07:08:09Z",
        "labels": {"app.kubernetes.io/part-of": "podtato-head"},
        "managedFields": [
            {
                "apiVersion": "lifecycle.keptn.sh/v1",
                "fieldsType": "FieldsV1",
                "manager": "klt-app-aggregator",
                "operation": "Update",
                "time": "2024-05-06T07:08:09Z",
            }
        ],
        **extra,
    }


_ITEM = {
    "definitionName": "check-entry",
    "name": "pre-check-entry-12345",
    "status": "Succeeded",
    "startTime": "2024-05-06T07:08:10Z",
    "endTime": "2024-05-06T07:08:30Z",
}

EXAMPLES: dict[str, dict[str, Any]] = {
    "KeptnApp": {
        "apiVersion": "lifecycle.keptn.sh/v1",
        "kind": "KeptnApp",
        "metadata": _meta("podtato-head"),
        "spec": {
            "version": "0.3.1",
            "revision": 2,
            "workloads": [
                {"name": "podtato-head-entry", "version": "0.3.1"},
                {"name": "podtato-head-hat", "version": "0.1.0"},
            ],
        },
        "status": {"currentVersion": "0.3.1"},
    },
    "KeptnAppContext": {
        "apiVersion": "lifecycle.keptn.sh/v1",
        "kind": "KeptnAppContext",
        "metadata": _meta("podtato-head"),
        "spec": {
            "preDeploymentTasks": ["check-entry"],
            "postDeploymentTasks": ["notify"],
            "preDeploymentEvaluations": ["cluster-healthy"],
            "postDeploymentEvaluations": ["latency-ok"],
            "promotionTasks": ["promote"],
            "metadata": {"stage": "dev", "commit-id": "1234"},
            "spanLinks": ["00-8a2c3b0d1e2f3a4b5c6d7e8f9a0b1c2d-1a2b3c4d5e6f7a8b-01"],
        },
        "status": {"status": "unused"},
    },
    "KeptnAppCreationRequest": {
        "apiVersion": "lifecycle.keptn.sh/v1",
        "kind": "KeptnAppCreationRequest",
        "metadata": _meta(
            "podtato-head",
            annotations={
                "keptn.sh/app-type": "single-service",
                "traceparent": "00-8a2c3b0d1e2f3a4b5c6d7e8f9a0b1c2d-1a2b3c4d5e6f7a8b-01",
            },
        ),
        "spec": {"appName": "podtato-head"},
    },
    "KeptnAppVersion": {
        "apiVersion": "lifecycle.keptn.sh/v1",
        "kind": "KeptnAppVersion",
        "metadata": _meta(
            "podtato-head-0.3.1-d4735e3a",
            ownerReferences=[
                {
                    "apiVersion": "lifecycle.keptn.sh/v1",
                    "kind": "KeptnApp",
                    "name": "podtato-head",
                    "uid": "11111111-2222-3333-4444-555555555555",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        ),
        "spec": {
            "appName": "podtato-head",
            "version": "0.3.1",
            "revision": 2,
            "previousVersion": "0.3.0",
            "workloads": [{"name": "podtato-head-entry", "version": "0.3.1"}],
            "preDeploymentTasks": ["check-entry"],
            "postDeploymentEvaluations": ["latency-ok"],
            "promotionTasks": ["promote"],
            "metadata": {"stage": "dev"},
            "spanLinks": ["00-8a2c3b0d1e2f3a4b5c6d7e8f9a0b1c2d-1a2b3c4d5e6f7a8b-01"],
            "traceId": {"traceparent": "00-8a2c3b0d1e2f3a4b5c6d7e8f9a0b1c2d-1a2b3c4d5e6f7a8b-01"},
        },
        "status": {
            "currentPhase": "AppPostDeployEvaluations",
            "status": "Progressing",
            "preDeploymentStatus": "Succeeded",
            "preDeploymentEvaluationStatus": "Succeeded",
            "workloadOverallStatus": "Succeeded",
            "postDeploymentStatus": "Warning",
            "postDeploymentEvaluationStatus": "Progressing",
            "promotionStatus": "Pending",
            "workloadStatus": [
                {
                    "workload": {"name": "podtato-head-entry", "version": "0.3.1"},
                    "status": "Succeeded",
                }
            ],
            "preDeploymentTaskStatus": [_ITEM],
            "postDeploymentTaskStatus": [
                {"definitionName": "notify", "name": "post-notify-23456", "status": "Failed"}
            ],
            "postDeploymentEvaluationTaskStatus": [
                {"definitionName": "latency-ok", "status": "Pending"}
            ],
            "phaseTraceIDs": {
                "AppPreDeployTasks": {
                    "traceparent": "00-8a2c3b0d1e2f3a4b5c6d7e8f9a0b1c2d-2b3c4d5e6f7a8b9c-01"
                }
            },
            "startTime": "2024-05-06T07:08:09Z",
        },
    },
    "KeptnWorkload": {
        "apiVersion": "lifecycle.keptn.sh/v1",
        "kind": "KeptnWorkload",
        "metadata": _meta("podtato-head-podtato-head-entry"),
        "spec": {
            "app": "podtato-head",
            "version": "0.3.1",
            "preDeploymentTasks": ["check-entry"],
            "postDeploymentEvaluations": ["latency-ok"],
            "resourceReference": {
                "uid": "957f825e-4025-4ea8-ad22-9292877ff7eb",
                "kind": "ReplicaSet",
                "name": "podtato-head-entry-6fc8964846",
            },
            "metadata": {"commit-id": "1234"},
        },
        "status": {"currentVersion": "0.3.1"},
    },
    "KeptnWorkloadVersion": {
        "apiVersion": "lifecycle.keptn.sh/v1",
        "kind": "KeptnWorkloadVersion",
        "metadata": _meta("podtato-head-podtato-head-entry-0.3.1"),
        "spec": {
            "app": "podtato-head",
            "workloadName": "podtato-head-podtato-head-entry",
            "version": "0.3.1",
            "previousVersion": "0.3.0",
            "preDeploymentTasks": ["check-entry"],
            "resourceReference": {
                "uid": "957f825e-4025-4ea8-ad22-9292877ff7eb",
                "kind": "ReplicaSet",
                "name": "podtato-head-entry-6fc8964846",
            },
            "traceId": {"traceparent": "00-8a2c3b0d1e2f3a4b5c6d7e8f9a0b1c2d-1a2b3c4d5e6f7a8b-01"},
        },
        "status": {
            "currentPhase": "WorkloadDeploy",
            "status": "Progressing",
            "preDeploymentStatus": "Succeeded",
            "preDeploymentEvaluationStatus": "Succeeded",
            "deploymentStatus": "Progressing",
            "postDeploymentStatus": "Pending",
            "postDeploymentEvaluationStatus": "Pending",
            "preDeploymentTaskStatus": [_ITEM],
            "appContextMetadata": {"stage": "dev"},
            "phaseTraceIDs": {
                "WorkloadPreDeployTasks": {
                    "traceparent": "00-8a2c3b0d1e2f3a4b5c6d7e8f9a0b1c2d-3c4d5e6f7a8b9c0d-01"
                }
            },
            "startTime": "2024-05-06T07:08:09Z",
            "deploymentStartTime": "2024-05-06T07:09:00Z",
        },
    },
    "KeptnTaskDefinition": {
        "apiVersion": "lifecycle.keptn.sh/v1",
        "kind": "KeptnTaskDefinition",
        "metadata": _meta("check-entry"),
        "spec": {
            "deno": {
                "inline": {"code": 'console.log("checking the entry service");\n'},
                "parameters": {"map": {"url": "http://podtato-head-entry:9000"}},
                "secureParameters": {"secret": "check-entry-token"},
            },
            "retries": 3,
            "timeout": "2m",
            "ttlSecondsAfterFinished": 600,
            "serviceAccount": {"name": "checker"},
            "automountServiceAccountToken": {"type": False},
            "imagePullSecrets": [{"name": "registry-credentials"}],
        },
        "status": {"function": {"configMap": "keptnfn-check-entry"}},
    },
    "KeptnTask": {
        "apiVersion": "lifecycle.keptn.sh/v1",
        "kind": "KeptnTask",
        "metadata": _meta("pre-check-entry-12345"),
        "spec": {
            "taskDefinition": "check-entry",
            "context": {
                "workloadName": "podtato-head-podtato-head-entry",
                "appName": "podtato-head",
                "appVersion": "",
                "workloadVersion": "0.3.1",
                "taskType": "pre",
                "objectType": "Workload",
                "metadata": {"stage": "dev"},
            },
            "parameters": {"map": {"extra": "value"}},
            "secureParameters": {"secret": "check-entry-token"},
            "checkType": "pre",
            "retries": 3,
            "timeout": "2m",
        },
        "status": {
            "jobName": "pre-check-entry-12345-67890",
            "status": "Failed",
            "message": "Job has reached the specified backoff limit",
            "reason": "BackoffLimitExceeded",
            "startTime": "2024-05-06T07:08:10Z",
            "endTime": "2024-05-06T07:09:10Z",
        },
    },
    "KeptnEvaluationDefinition": {
        "apiVersion": "lifecycle.keptn.sh/v1",
        "kind": "KeptnEvaluationDefinition",
        "metadata": _meta("latency-ok"),
        "spec": {
            "objectives": [
                {
                    "keptnMetricRef": {"name": "p95-latency", "namespace": "monitoring"},
                    "evaluationTarget": "<300",
                },
                {"keptnMetricRef": {"name": "available-cpus"}, "evaluationTarget": ">1"},
            ],
            "retries": 5,
            "retryInterval": "10s",
        },
    },
    "KeptnEvaluation": {
        "apiVersion": "lifecycle.keptn.sh/v1",
        "kind": "KeptnEvaluation",
        "metadata": _meta("post-eval-latency-ok-23456"),
        "spec": {
            "appName": "podtato-head",
            "appVersion": "0.3.1",
            "workloadVersion": "",
            "evaluationDefinition": "latency-ok",
            "checkType": "post-eval",
            "retries": 5,
            "retryInterval": "10s",
        },
        "status": {
            "retryCount": 2,
            "overallStatus": "Progressing",
            "evaluationStatus": {
                "p95-latency": {
                    "value": "412",
                    "status": "Failed",
                    "message": "value '412' did not meet objective '<300'",
                },
                "available-cpus": {
                    "value": "4",
                    "status": "Succeeded",
                    "message": "value '4' met objective '>1'",
                },
            },
            "startTime": "2024-05-06T07:08:10Z",
        },
    },
    "KeptnMetric": {
        "apiVersion": "metrics.keptn.sh/v1",
        "kind": "KeptnMetric",
        "metadata": _meta("p95-latency"),
        "spec": {
            "provider": {"name": "my-prometheus"},
            "query": "histogram_quantile(0.95, sum by (le) (rate(http_seconds_bucket[5m])))",
            "fetchIntervalSeconds": 10,
            "range": {"interval": "5m", "step": "1m", "aggregation": "p95", "storedResults": 2},
        },
        "status": {
            "value": "0.412",
            "rawValue": "MC40MTI=",
            "lastUpdated": "2024-05-06T07:08:10Z",
            "intervalResults": [
                {
                    "value": "0.4",
                    "range": {"interval": "5m", "step": "1m", "aggregation": "p95"},
                    "lastUpdated": "2024-05-06T07:03:10Z",
                },
                {
                    "value": "",
                    "range": {"interval": "5m", "step": "1m", "aggregation": "p95"},
                    "lastUpdated": "2024-05-06T07:08:10Z",
                    "errMsg": "no values in query result",
                },
            ],
        },
    },
    "KeptnMetricsProvider": {
        "apiVersion": "metrics.keptn.sh/v1",
        "kind": "KeptnMetricsProvider",
        "metadata": _meta("my-prometheus"),
        "spec": {
            "type": "prometheus",
            "targetServer": "http://prometheus-k8s.monitoring.svc.cluster.local:9090",
            "secretKeyRef": {"name": "prometheus-credentials", "key": "password", "optional": True},
            "insecureSkipTlsVerify": True,
        },
    },
    "Analysis": {
        "apiVersion": "metrics.keptn.sh/v1",
        "kind": "Analysis",
        "metadata": _meta("analysis-sample"),
        "spec": {
            "timeframe": {"from": "2024-05-06T07:00:00Z", "to": "2024-05-06T07:05:00Z"},
            "args": {"project": "podtato", "stage": "dev"},
            "analysisDefinition": {"name": "ad-my-proj", "namespace": "keptn-system"},
        },
        "status": {
            "timeframe": {"from": "2024-05-06T07:00:00Z", "to": "2024-05-06T07:05:00Z"},
            "state": "Completed",
            "pass": True,
            "warning": False,
            "raw": '{"totalScore":2,"maximumScore":2,"pass":true,"warning":false}',
            "storedValues": {
                "response-time-p95": {
                    "objectiveReference": {
                        "name": "response-time-p95",
                        "namespace": "keptn-system",
                    },
                    "query": "sum(kube_pod_container_resource_limits{node='x'})",
                    "value": "0.12",
                }
            },
        },
    },
    "AnalysisDefinition": {
        "apiVersion": "metrics.keptn.sh/v1",
        "kind": "AnalysisDefinition",
        "metadata": _meta("ad-my-proj"),
        "spec": {
            "objectives": [
                {
                    "analysisValueTemplateRef": {"name": "response-time-p95"},
                    "target": {
                        "failure": {"lessThan": {"fixedValue": 600}},
                        "warning": {"inRange": {"lowBound": 300, "highBound": "500m"}},
                    },
                    "weight": 2,
                    "keyObjective": True,
                },
                {
                    "analysisValueTemplateRef": {"name": "error-rate", "namespace": "shared"},
                    "target": {"failure": {"notInRange": {"lowBound": "0", "highBound": "1.5"}}},
                    "weight": 1,
                    "keyObjective": False,
                },
            ],
            "totalScore": {"passPercentage": 90, "warningPercentage": 75},
        },
    },
    "AnalysisValueTemplate": {
        "apiVersion": "metrics.keptn.sh/v1",
        "kind": "AnalysisValueTemplate",
        "metadata": _meta("response-time-p95"),
        "spec": {
            "provider": {"name": "my-prometheus", "namespace": "monitoring"},
            "query": "sum(kube_pod_container_resource_limits{node='{{.nodename}}'})",
        },
    },
    "KeptnConfig": {
        "apiVersion": "options.keptn.sh/v1alpha1",
        "kind": "KeptnConfig",
        "metadata": _meta("keptn-config"),
        "spec": {
            "OTelCollectorUrl": "otel-collector:4317",
            "keptnAppCreationRequestTimeoutSeconds": 10,
            "cloudEventsEndpoint": "http://events.example.svc:8080/events",
            "blockDeployment": False,
            "observabilityTimeout": "10m",
        },
    },
}
