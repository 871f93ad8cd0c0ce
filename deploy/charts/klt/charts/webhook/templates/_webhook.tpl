{{/* Where cert-manager's Secret is mounted (KLT_CERTS__CERT_DIR in "files" mode). */}}
{{- define "klt.webhook.certDir" -}}/etc/klt/webhook-certs{{- end -}}

{{/*
The namespace selector of one webhook: what klt_webhook.registration.namespace_selector builds,
so the chart and the running webhook agree field for field. Keys: ctx, excludeOwn.
allowedNamespaces, when set, replaces deniedNamespaces.
*/}}
{{- define "klt.webhook.namespaceSelector" -}}
{{- $v := .ctx.Values -}}
{{- $excluded := list "kube-system" "kube-public" "kube-node-lease" -}}
{{- if .excludeOwn }}{{ $excluded = append $excluded .ctx.Release.Namespace }}{{ end -}}
{{- if not $v.allowedNamespaces }}{{ $excluded = concat $excluded $v.deniedNamespaces }}{{ end -}}
{{- $excluded = $excluded | uniq | sortAlpha -}}
matchExpressions:
  - key: kubernetes.io/metadata.name
    operator: NotIn
    values:
      {{- toYaml $excluded | nindent 6 }}
  {{- with $v.allowedNamespaces }}
  - key: kubernetes.io/metadata.name
    operator: In
    values:
      {{- toYaml (. | uniq | sortAlpha) | nindent 6 }}
  {{- end }}
{{- end -}}

{{/* Labels of the webhook configurations: the ones the webhook itself applies, so neither
side rewrites the other's (managed-by says who keeps them current). */}}
{{- define "klt.webhook.configurationLabels" -}}
{{ include "klt.selectorLabels" . }}
app.kubernetes.io/component: webhook
app.kubernetes.io/part-of: klt
app.kubernetes.io/managed-by: klt-webhook
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end -}}

{{- define "klt.webhook.caInjection" -}}
{{- if .Values.global.certManager.enabled }}
annotations:
  cert-manager.io/inject-ca-from: {{ printf "%s/%s" .Release.Namespace (include "klt.webhookCertificateName" .) }}
{{- end }}
{{- end -}}

{{/* The klt CRDs that serve more than one version: the only ones whose conversion it patches. */}}
{{- define "klt.webhook.multiVersionCrds" -}}
{{- $names := list -}}
{{- range $path, $_ := .Files.Glob "files/*.yaml" -}}
{{- $crd := $.Files.Get $path | fromYaml -}}
{{- $served := 0 -}}
{{- range $crd.spec.versions }}{{ if .served }}{{ $served = add1 $served }}{{ end }}{{ end -}}
{{- if gt $served 1 }}{{ $names = append $names $crd.metadata.name }}{{ end -}}
{{- end -}}
{{- toYaml (sortAlpha $names) -}}
{{- end -}}
