{{/* A ServiceMonitor (prometheus-operator) for the service's /metrics on port http-metrics. */}}
{{- define "klt.serviceMonitor" -}}
{{- $sm := .ctx.Values.global.serviceMonitor -}}
{{- if $sm.enabled }}
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: {{ include "klt.name" . }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "klt.labels" . | nindent 4 }}
    {{- with $sm.labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  selector:
    matchLabels:
      {{- include "klt.selectorLabels" . | nindent 6 }}
  namespaceSelector:
    matchNames:
      - {{ .ctx.Release.Namespace }}
  endpoints:
    - port: http-metrics
      path: /metrics
      scheme: http
      interval: {{ $sm.interval }}
      scrapeTimeout: {{ $sm.scrapeTimeout }}
{{- end }}
{{- end -}}

{{/*
A NetworkPolicy for one service. Ingress: the metrics port from global.networkPolicy.metricsFrom
(anyone when empty; kubelet probes are not subject to policies on common CNIs), plus the extra
rules a chart passes as "ingress" (the webhook's admission port) and the service's
networkPolicy.extraIngress. Egress is restricted only with global.networkPolicy.egress.enabled:
DNS, the apiserver, Kafka, plus networkPolicy.extraEgress (the evaluator's metric providers).
*/}}
{{- define "klt.networkPolicy" -}}
{{- $ctx := .ctx -}}
{{- $np := $ctx.Values.global.networkPolicy -}}
{{- if $np.enabled }}
{{- $egress := $np.egress -}}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "klt.name" . }}
  namespace: {{ $ctx.Release.Namespace }}
  labels:
    {{- include "klt.labels" . | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "klt.selectorLabels" . | nindent 6 }}
  policyTypes:
    - Ingress
    {{- if $egress.enabled }}
    - Egress
    {{- end }}
  ingress:
    - ports:
        - port: http-metrics
          protocol: TCP
      {{- with $np.metricsFrom }}
      from:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    {{- with .ingress }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
    {{- with $ctx.Values.networkPolicy.extraIngress }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- if $egress.enabled }}
  egress:
    {{- if $egress.dns }}
    - ports:
        - port: 53
          protocol: UDP
        - port: 53
          protocol: TCP
    {{- end }}
    - ports:
        {{- range $egress.apiServer.ports }}
        - port: {{ . }}
          protocol: TCP
        {{- end }}
      {{- with $egress.apiServer.cidrs }}
      to:
        {{- range . }}
        - ipBlock:
            cidr: {{ . }}
        {{- end }}
      {{- end }}
    {{- if $ctx.Values.global.kafka.bundled }}
    - ports:
        - port: 9092
          protocol: TCP
      to:
        - podSelector:
            matchLabels:
              app.kubernetes.io/name: kafka
              app.kubernetes.io/instance: {{ $ctx.Release.Name }}
    {{- else }}
    - ports:
        {{- range $egress.kafka.ports }}
        - port: {{ . }}
          protocol: TCP
        {{- end }}
      {{- with $egress.kafka.cidrs }}
      to:
        {{- range . }}
        - ipBlock:
            cidr: {{ . }}
        {{- end }}
      {{- end }}
    {{- end }}
    {{- with $ctx.Values.networkPolicy.extraEgress }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
{{- end }}
{{- end -}}
