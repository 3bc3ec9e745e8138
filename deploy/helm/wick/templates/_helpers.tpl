{{/*
Names, labels and shared pod pieces of the wick chart.
*/}}

{{/*
Chart name, overridable with nameOverride.
*/}}
{{- define "wick.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Prefix of every resource name: the release name, or fullnameOverride.
It is cut to 40 characters because the longest derived name,
"<prefix>-worker-headless", must fit the 63-character DNS label limit, and
the StatefulSet's revision label adds a hash to "<prefix>-worker".
*/}}
{{- define "wick.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- end }}

{{- define "wick.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every resource.
*/}}
{{- define "wick.labels" -}}
helm.sh/chart: {{ include "wick.chart" . }}
app.kubernetes.io/name: {{ include "wick.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels of one component. Call with (dict "root" $ "component" "gateway").
*/}}
{{- define "wick.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wick.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
All labels of one component's resources.
*/}}
{{- define "wick.componentLabels" -}}
{{ include "wick.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "wick.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "wick.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image of one component: its own repository and tag where set, else the
top-level image, with the tag defaulting to the chart's appVersion.
Call with (dict "root" $ "image" .Values.worker.image).
*/}}
{{- define "wick.image" -}}
{{- $repository := default .root.Values.image.repository .image.repository }}
{{- $tag := default (default .root.Chart.AppVersion .root.Values.image.tag) .image.tag }}
{{- printf "%s:%s%s" $repository $tag (default "" .image.tagSuffix) }}
{{- end }}

{{- define "wick.gatewayName" -}}
{{- printf "%s-gateway" (include "wick.fullname" .) }}
{{- end }}

{{- define "wick.schedulerName" -}}
{{- printf "%s-scheduler" (include "wick.fullname" .) }}
{{- end }}

{{- define "wick.workerName" -}}
{{- printf "%s-worker" (include "wick.fullname" .) }}
{{- end }}

{{- define "wick.workerHeadlessName" -}}
{{- printf "%s-worker-headless" (include "wick.fullname" .) }}
{{- end }}

{{- define "wick.apiKeysSecretName" -}}
{{- default (printf "%s-api-keys" (include "wick.fullname" .)) .Values.gateway.apiKeys.existingSecret }}
{{- end }}

{{/*
Service DNS suffix: "svc", or "svc.<clusterDomain>" when clusterDomain is set.
*/}}
{{- define "wick.svcSuffix" -}}
{{- if .Values.clusterDomain }}
{{- printf "svc.%s" .Values.clusterDomain }}
{{- else }}
{{- print "svc" }}
{{- end }}
{{- end }}

{{/*
Scheduler URL that the gateway dials.
*/}}
{{- define "wick.schedulerUrl" -}}
{{- if .Values.gateway.schedulerUrl }}
{{- .Values.gateway.schedulerUrl }}
{{- else }}
{{- printf "http://%s.%s.%s:%d" (include "wick.schedulerName" .) .Release.Namespace (include "wick.svcSuffix" .) (int .Values.scheduler.grpcPort) }}
{{- end }}
{{- end }}

{{/*
Worker URLs that the scheduler dials, one per line: the stable DNS name of
each StatefulSet pod behind the headless Service, then extraWorkerUrls.
*/}}
{{- define "wick.workerUrls" -}}
{{- $worker := include "wick.workerName" . }}
{{- $headless := include "wick.workerHeadlessName" . }}
{{- $suffix := include "wick.svcSuffix" . }}
{{- $replicas := int .Values.worker.replicas }}
{{- $slots := int .Values.scheduler.workerSlots }}
{{- if and (gt $slots 0) (lt $slots $replicas) }}
{{- fail (printf "scheduler.workerSlots (%d) is below worker.replicas (%d): raise it, or set 0 to follow worker.replicas" $slots $replicas) }}
{{- end }}
{{- range $i := until (max $slots $replicas | int) }}
{{ printf "http://%s-%d.%s.%s.%s:%d" $worker $i $headless $.Release.Namespace $suffix (int $.Values.worker.grpcPort) }}
{{- end }}
{{- range .Values.scheduler.extraWorkerUrls }}
{{ . }}
{{- end }}
{{- end }}

{{/*
Environment shared by every component: log settings and trace export.
*/}}
{{- define "wick.commonEnv" -}}
- name: WICK_LOG_FORMAT
  value: {{ .Values.log.format | quote }}
- name: RUST_LOG
  value: {{ .Values.log.level | quote }}
{{- with .Values.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- end }}

{{/*
Listen address for a port, e.g. "0.0.0.0:8080" or "[::]:8080".
Call with (list $ port).
*/}}
{{- define "wick.listen" -}}
{{- $root := index . 0 }}
{{- printf "%s:%d" $root.Values.listenHost (int (index . 1)) }}
{{- end }}

{{/*
Pod spec fields shared by every component. Call with (dict "root" $ "values" .Values.gateway).
*/}}
{{- define "wick.podCommon" -}}
serviceAccountName: {{ include "wick.serviceAccountName" .root }}
automountServiceAccountToken: false
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
terminationGracePeriodSeconds: {{ .values.terminationGracePeriodSeconds }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
HF_TOKEN read from worker.model.hfTokenSecret.
*/}}
{{- define "wick.hfTokenEnv" -}}
- name: HF_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .Values.worker.model.hfTokenSecret.name }}
      key: {{ .Values.worker.model.hfTokenSecret.key }}
{{- end }}

{{/*
Worker resources, with the GPU request added when worker.gpu.enabled.
Extended resources such as GPUs are set as limits; Kubernetes copies them
to requests.
*/}}
{{- define "wick.workerResources" -}}
{{- $resources := deepCopy (default dict .Values.worker.resources) }}
{{- if .Values.worker.gpu.enabled }}
{{- $limits := default dict (get $resources "limits") }}
{{- $_ := set $limits .Values.worker.gpu.resourceName (int .Values.worker.gpu.count) }}
{{- $_ := set $resources "limits" $limits }}
{{- end }}
{{- toYaml $resources }}
{{- end }}
