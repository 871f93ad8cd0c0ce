{{/* The function runner images (KLT_TASKS__DENO_IMAGE, KLT_TASKS__PYTHON_IMAGE). */}}
{{- define "klt.task-runner.env" -}}
{{- $g := .Values.global.image -}}
{{- range $name, $runtime := .Values.runtimes }}
{{- $repo := $runtime.repository -}}
{{- if $g.registry }}{{ $repo = printf "%s/%s" (trimSuffix "/" $g.registry) $runtime.repository }}{{ end }}
- name: KLT_TASKS__{{ upper $name }}_IMAGE
  value: {{ printf "%s:%s" $repo ($runtime.tag | default $g.tag | default $.Chart.AppVersion) | quote }}
{{- end }}
{{- end -}}
