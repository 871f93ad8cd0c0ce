{{/* Settings of the evaluator beyond the common ones: none yet (extraSettings for more). */}}
{{- define "klt.evaluator.env" -}}{{- end -}}
