{{/* Settings of the app-aggregator beyond the common ones: none yet (extraSettings for more). */}}
{{- define "klt.app-aggregator.env" -}}{{- end -}}
