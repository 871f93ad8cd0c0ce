{{/* Settings of the scheduler beyond the common ones: none yet (extraSettings for more). */}}
{{- define "klt.scheduler.env" -}}{{- end -}}
