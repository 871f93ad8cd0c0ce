"""Every pinned version of the dev stack's third-party pieces, in one place.

Bumping a value here changes that artifact's recipe fingerprint, so the next
`klt dev build` rebuilds exactly that artifact and nothing else.
"""

from __future__ import annotations

K8S_VERSION = "1.34.1"
# The staging modules (k8s.io/api, client-go, ...) are tagged v0.<minor>.<patch>.
K8S_STAGING_VERSION = "0.34.1"
# Copied from k8s.io/kubernetes' own go.mod: the wrapper module must not ask for
# newer language semantics than kubernetes was written against.
K8S_GO_LINE = "1.24.0"
K8S_GODEBUG = "go1.24"
# kubernetes' go.mod requires every staging module at v0.0.0 and replaces it with
# ./staging/...; outside the kubernetes tree each one must be replaced with its
# real tag (kubernetes#79384). This is the 1.32-1.35 list (1.36 adds streaming).
K8S_STAGING_MODULES = (
    "api",
    "apiextensions-apiserver",
    "apimachinery",
    "apiserver",
    "cli-runtime",
    "client-go",
    "cloud-provider",
    "cluster-bootstrap",
    "code-generator",
    "component-base",
    "component-helpers",
    "controller-manager",
    "cri-api",
    "cri-client",
    "csi-translation-lib",
    "dynamic-resource-allocation",
    "endpointslice",
    "externaljwt",
    "kms",
    "kube-aggregator",
    "kube-controller-manager",
    "kube-proxy",
    "kube-scheduler",
    "kubectl",
    "kubelet",
    "metrics",
    "mount-utils",
    "pod-security-admission",
    "sample-apiserver",
    "sample-cli-plugin",
    "sample-controller",
)
K8S_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")

ETCD_VERSION = "3.6.14"
# etcd's go.mod declares go 1.25; `go mod tidy` raises the wrapper's line to it.
ETCD_GO_LINE = "1.24.0"

KAFKA_VERSION = "4.1.1"
KAFKA_SCALA_VERSION = "2.13"
# Kafka's POM leaves out the logging binding (it is a release-only dependency);
# without it the broker runs but logs nothing. 4.0 and 4.1 ship log4j 2.24.3.
KAFKA_LOG4J_SLF4J_VERSION = "2.24.3"
MAVEN_DEPENDENCY_PLUGIN_VERSION = "3.7.1"

DENO_VERSION = "2.9.6"

# helm for the chart in deploy/charts (lint, template, install). It has no replace directives,
# so a plain wrapper module builds it; its go.mod asks for go 1.26.0 (v3.21.x).
HELM_VERSION = "3.21.4"
HELM_GO_LINE = "1.26.0"

# Prometheus for the evaluator's integration tests: the distribution's package (bookworm ships
# 2.42), installed with apt when the binary is missing. Not pinned to a Debian revision, so the
# same recipe works on any Debian or Ubuntu release; the probe only checks the major version.
PROMETHEUS_DEB_PACKAGE = "prometheus"
PROMETHEUS_BINARY = "/usr/bin/prometheus"
PROMETHEUS_MIN_MAJOR = 2
