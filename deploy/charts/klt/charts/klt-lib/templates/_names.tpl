{{/*
Names and labels. Every template here takes a "component context": a dict with
  ctx        the chart's root context ($ of the calling template),
  component  the service's name (webhook, app-aggregator, task-runner, evaluator, scheduler,
             kafka), used in object names and labels.
A subchart's .Chart.Name is its alias inside the umbrella chart, so names never derive from it.
*/}}

{{/*
The prefix of every object name: global.fullnameOverride, else the release name, with "-klt"
appended unless it already contains "klt". Every subchart computes the same prefix, which is how
the CRDs chart names the webhook's Service. Truncated to 40 characters so that
"<prefix>-app-aggregator" still fits a 63-character DNS label.
*/}}
{{- define "klt.fullname" -}}
{{- $global := .Values.global | default dict -}}
{{- $name := "" -}}
{{- if $global.fullnameOverride -}}
{{- $name = $global.fullnameOverride -}}
{{- else if contains "klt" .Release.Name -}}
{{- $name = .Release.Name -}}
{{- else -}}
{{- $name = printf "%s-klt" .Release.Name -}}
{{- end -}}
{{- $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/* "<prefix>-<component>": the Deployment, Service, ServiceAccount... of one service. */}}
{{- define "klt.name" -}}
{{- printf "%s-%s" (include "klt.fullname" .ctx) .component -}}
{{- end -}}

{{- define "klt.selectorLabels" -}}
app.kubernetes.io/name: {{ .component }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- end -}}

{{- define "klt.labels" -}}
{{ include "klt.selectorLabels" . }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/part-of: klt
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- with (.ctx.Values.global | default dict).commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "klt.serviceAccountName" -}}
{{- $sa := .ctx.Values.serviceAccount -}}
{{- if $sa.create -}}
{{- default (include "klt.name" .) $sa.name -}}
{{- else -}}
{{- required (printf "%s.serviceAccount.name is required when serviceAccount.create is false" .component) $sa.name -}}
{{- end -}}
{{- end -}}

{{/* The image reference: <global.image.registry>/<image.repository>:<tag>[@<digest>]. */}}
{{- define "klt.image" -}}
{{- $g := .ctx.Values.global.image -}}
{{- $i := .ctx.Values.image -}}
{{- $tag := $i.tag | default $g.tag | default .ctx.Chart.AppVersion -}}
{{- $repo := $i.repository -}}
{{- if $g.registry -}}
{{- $repo = printf "%s/%s" (trimSuffix "/" $g.registry) $i.repository -}}
{{- end -}}
{{- if $i.digest -}}
{{- printf "%s:%s@%s" $repo $tag $i.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}
{{- end -}}

{{/* The Kafka bootstrap address: the bundled broker's Service, or global.kafka.bootstrapServers. */}}
{{- define "klt.kafkaBootstrap" -}}
{{- $kafka := .Values.global.kafka -}}
{{- if $kafka.bundled -}}
{{- printf "%s-kafka.%s.svc:9092" (include "klt.fullname" .) .Release.Namespace -}}
{{- else -}}
{{- required "global.kafka.bootstrapServers is required unless global.kafka.bundled is true" $kafka.bootstrapServers -}}
{{- end -}}
{{- end -}}

{{/* The webhook's Service, named by every chart that points at it (webhook configurations, CRDs). */}}
{{- define "klt.webhookServiceName" -}}
{{- printf "%s-webhook" (include "klt.fullname" .) -}}
{{- end -}}

{{/* The cert-manager Certificate whose CA is injected into webhook configurations and CRDs. */}}
{{- define "klt.webhookCertificateName" -}}
{{- printf "%s-webhook" (include "klt.fullname" .) -}}
{{- end -}}

{{- define "klt.mutatingWebhookName" -}}
{{- printf "%s-mutating-webhook" (include "klt.fullname" .) -}}
{{- end -}}

{{- define "klt.validatingWebhookName" -}}
{{- printf "%s-validating-webhook" (include "klt.fullname" .) -}}
{{- end -}}
