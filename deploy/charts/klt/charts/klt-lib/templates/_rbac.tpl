{{/*
RBAC plumbing. The rules themselves live in each service chart's rbac.yaml, written out by hand
so that a reader sees exactly what a service may do; deploy/rbac-matrix.yaml is the contract
they implement, and tests/unit/chart and tests/integration/chart hold them to it.
*/}}

{{/* Every service records core/v1 Events (kubectl describe) and may use the events.k8s.io API. */}}
{{- define "klt.rbac.eventRules" -}}
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end -}}

{{/*
A ClusterRole with the given rules and its ClusterRoleBinding to the service's account. Extra
keys: rules (a YAML string of rules), suffix (appended to the name, optional).
*/}}
{{- define "klt.rbac.clusterRole" -}}
{{- $name := include "klt.name" . -}}
{{- if .suffix }}{{ $name = printf "%s-%s" $name .suffix }}{{ end -}}
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: {{ $name }}
  labels:
    {{- include "klt.labels" . | nindent 4 }}
rules:
  {{- .rules | nindent 2 }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: {{ $name }}
  labels:
    {{- include "klt.labels" . | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: {{ $name }}
subjects:
  - kind: ServiceAccount
    name: {{ include "klt.serviceAccountName" . }}
    namespace: {{ .ctx.Release.Namespace }}
{{- end -}}

{{/*
A ClusterRole that only reads Secrets (get, optionally only the named ones), bound by a
RoleBinding in each of the given namespaces and nowhere else: the service reads Secrets in
those namespaces and cannot list or watch them, nor read any Secret elsewhere. Extra keys:
namespaces (list), secretNames (list, optional), suffix.
*/}}
{{- define "klt.rbac.namespacedSecretReader" -}}
{{- $ctx := .ctx -}}
{{- $c := . -}}
{{- $name := printf "%s-%s" (include "klt.name" .) .suffix -}}
{{- if .namespaces }}
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: {{ $name }}
  labels:
    {{- include "klt.labels" . | nindent 4 }}
rules:
  - apiGroups: [""]
    resources: [secrets]
    {{- with .secretNames }}
    resourceNames:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    verbs: [get]
{{- range $ns := .namespaces }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: {{ $name }}
  namespace: {{ $ns }}
  labels:
    {{- include "klt.labels" $c | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: {{ $name }}
subjects:
  - kind: ServiceAccount
    name: {{ include "klt.serviceAccountName" $c }}
    namespace: {{ $ctx.Release.Namespace }}
{{- end }}
{{- end }}
{{- end -}}
