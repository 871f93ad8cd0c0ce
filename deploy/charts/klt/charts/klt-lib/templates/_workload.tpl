{{/*
The objects every klt service has: ServiceAccount, Deployment, Service (probes and /metrics on
port 8080; more ports may be added), PodDisruptionBudget, and its scaler (an HPA on CPU, or a
KEDA ScaledObject on consumer lag, never both). Each takes a component context (see
_names.tpl); the Deployment and Service accept extra keys:
  env           service-specific env entries (list), placed after the common KLT_ ones
  ports         extra container ports (list)
  servicePorts  extra Service ports (list)
  volumes       extra pod volumes (list)
  volumeMounts  extra container mounts (list)
*/}}

{{/* The settings every service reads (klt_common.configs.settings). */}}
{{- define "klt.commonEnv" -}}
{{- $ctx := .ctx -}}
{{- $g := $ctx.Values.global -}}
{{- $v := $ctx.Values -}}
- name: KLT_INSTANCE_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: KLT_CLUSTER__NAMESPACE
  value: {{ $ctx.Release.Namespace | quote }}
- name: KLT_BUS__BOOTSTRAP_SERVERS
  value: {{ include "klt.kafkaBootstrap" $ctx | quote }}
- name: KLT_BUS__TOPIC_PREFIX
  value: {{ $g.kafka.topicPrefix | quote }}
- name: KLT_BUS__PARTITIONS
  value: {{ $g.kafka.partitions | quote }}
- name: KLT_BUS__REPLICATION_FACTOR
  value: {{ $g.kafka.replicationFactor | quote }}
- name: KLT_OBSERVABILITY__HTTP_PORT
  value: "8080"
- name: KLT_OBSERVABILITY__LOG_LEVEL
  value: {{ $v.logLevel | default $g.observability.logLevel | quote }}
- name: KLT_OBSERVABILITY__LOG_JSON
  value: {{ $g.observability.logJson | quote }}
{{- with $g.observability.otlpEndpoint }}
- name: KLT_OBSERVABILITY__OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
- name: KLT_SHUTDOWN__GRACE_SECONDS
  value: {{ $v.shutdownGraceSeconds | quote }}
{{- end -}}

{{- define "klt.autoscaled" -}}
{{- $v := .ctx.Values -}}
{{- if or $v.autoscaling.enabled (and $v.keda $v.keda.enabled) -}}true{{- end -}}
{{- end -}}

{{- define "klt.serviceAccount" -}}
{{- if .ctx.Values.serviceAccount.create }}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "klt.serviceAccountName" . }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "klt.labels" . | nindent 4 }}
  {{- with .ctx.Values.serviceAccount.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- end -}}

{{- define "klt.deployment" -}}
{{- $ctx := .ctx -}}
{{- $v := $ctx.Values -}}
{{- $g := $v.global -}}
{{- if ge (float64 $v.shutdownGraceSeconds) (float64 $v.terminationGracePeriodSeconds) -}}
{{- fail (printf "%s.shutdownGraceSeconds (%v) must be below terminationGracePeriodSeconds (%v): offsets are committed in that gap before the kubelet's SIGKILL" .component $v.shutdownGraceSeconds $v.terminationGracePeriodSeconds) -}}
{{- end -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "klt.name" . }}
  namespace: {{ $ctx.Release.Namespace }}
  labels:
    {{- include "klt.labels" . | nindent 4 }}
spec:
  {{- if not (include "klt.autoscaled" .) }}
  replicas: {{ $v.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  strategy:
    type: RollingUpdate
    rollingUpdate:
      # A new pod is ready before an old one stops: admission and consumer groups never lose a
      # member to a rollout.
      maxUnavailable: 0
      maxSurge: 1
  selector:
    matchLabels:
      {{- include "klt.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "klt.labels" . | nindent 8 }}
        {{- with $v.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with $v.podAnnotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      serviceAccountName: {{ include "klt.serviceAccountName" . }}
      automountServiceAccountToken: true
      # Service links would put <SERVICE>_PORT variables into the environment; klt reads its
      # settings from KLT_* variables and needs none of them.
      enableServiceLinks: false
      terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
      {{- with $v.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      {{- with $g.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml $g.podSecurityContext | nindent 8 }}
      containers:
        - name: {{ .component }}
          image: {{ include "klt.image" . | quote }}
          imagePullPolicy: {{ $v.image.pullPolicy | default $g.image.pullPolicy }}
          ports:
            - name: http-metrics
              containerPort: 8080
              protocol: TCP
            {{- with .ports }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          env:
            {{- include "klt.commonEnv" . | nindent 12 }}
            {{- with .env }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
            {{- range $key, $value := $v.extraSettings }}
            - name: {{ printf "KLT_%s" $key }}
              value: {{ $value | toString | quote }}
            {{- end }}
            {{- with $v.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          startupProbe:
            httpGet:
              path: /healthz
              port: http-metrics
            periodSeconds: 2
            # Up to a minute: a service retries the brokers for about half a minute at start.
            failureThreshold: 30
          livenessProbe:
            httpGet:
              path: /healthz
              port: http-metrics
            periodSeconds: 10
            timeoutSeconds: 3
            failureThreshold: 3
          readinessProbe:
            httpGet:
              path: /readyz
              port: http-metrics
            periodSeconds: 5
            timeoutSeconds: 3
            failureThreshold: 2
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          securityContext:
            {{- toYaml $g.containerSecurityContext | nindent 12 }}
          volumeMounts:
            # The root filesystem is read-only; /tmp is the one writable place.
            - name: tmp
              mountPath: /tmp
            {{- with .volumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
        {{- with .volumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with $v.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.topologySpreadConstraints }}
      topologySpreadConstraints:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end -}}

{{- define "klt.service" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "klt.name" . }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "klt.labels" . | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "klt.selectorLabels" . | nindent 4 }}
  ports:
    - name: http-metrics
      port: 8080
      targetPort: http-metrics
      protocol: TCP
    {{- with .servicePorts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end -}}

{{- define "klt.pdb" -}}
{{- $pdb := .ctx.Values.pdb -}}
{{- if $pdb.enabled }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "klt.name" . }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "klt.labels" . | nindent 4 }}
spec:
  {{- if and (not (kindIs "invalid" $pdb.minAvailable)) (not (kindIs "invalid" $pdb.maxUnavailable)) }}
  {{- fail (printf "%s.pdb: set minAvailable or maxUnavailable, not both" .component) }}
  {{- end }}
  {{- if not (kindIs "invalid" $pdb.minAvailable) }}
  minAvailable: {{ $pdb.minAvailable }}
  {{- else }}
  maxUnavailable: {{ $pdb.maxUnavailable | default 1 }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "klt.selectorLabels" . | nindent 6 }}
{{- end }}
{{- end -}}

{{/* An HPA on CPU; skipped when KEDA scales the service (KEDA then adds the CPU trigger). */}}
{{- define "klt.hpa" -}}
{{- $v := .ctx.Values -}}
{{- if and $v.autoscaling.enabled (not (and $v.keda $v.keda.enabled)) }}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "klt.name" . }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "klt.labels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "klt.name" . }}
  minReplicas: {{ $v.autoscaling.minReplicas }}
  maxReplicas: {{ $v.autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $v.autoscaling.targetCPUUtilizationPercentage }}
{{- end }}
{{- end -}}

{{/*
A KEDA ScaledObject on the lag of the service's consumer group on its topic. Extra keys:
  group  the Kafka consumer group (the service's default)
  topic  the topic before the prefix (klt_common.structs.events.Topic)
With autoscaling.enabled too, the CPU target becomes a second trigger of the same ScaledObject
(KEDA owns the HPA; a second HPA on the Deployment would fight it).
*/}}
{{- define "klt.scaledObject" -}}
{{- $ctx := .ctx -}}
{{- $v := $ctx.Values -}}
{{- $k := $v.keda -}}
{{- if $k.enabled }}
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: {{ include "klt.name" . }}
  namespace: {{ $ctx.Release.Namespace }}
  labels:
    {{- include "klt.labels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "klt.name" . }}
  minReplicaCount: {{ $k.minReplicas }}
  maxReplicaCount: {{ $k.maxReplicas }}
  pollingInterval: {{ $k.pollingInterval }}
  cooldownPeriod: {{ $k.cooldownPeriod }}
  triggers:
    - type: kafka
      {{- with $k.authenticationRef }}
      authenticationRef:
        name: {{ . }}
      {{- end }}
      metadata:
        bootstrapServers: {{ include "klt.kafkaBootstrap" $ctx | quote }}
        consumerGroup: {{ printf "%s%s" $v.global.kafka.topicPrefix .group | quote }}
        topic: {{ printf "%s%s" $v.global.kafka.topicPrefix .topic | quote }}
        lagThreshold: {{ $k.lagThreshold | quote }}
        activationLagThreshold: {{ $k.activationLagThreshold | quote }}
        offsetResetPolicy: {{ $k.offsetResetPolicy | quote }}
        # More members than partitions would sit idle: never scale past the partition count.
        allowIdleConsumers: "false"
    {{- if $v.autoscaling.enabled }}
    - type: cpu
      metricType: Utilization
      metadata:
        value: {{ $v.autoscaling.targetCPUUtilizationPercentage | quote }}
    {{- end }}
{{- end }}
{{- end -}}
