{{/* Names, labels and the cfy-init configuration shared by the templates. */}}

{{- define "cfy-manager.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "cfy-manager.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "cfy-manager.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cfy-manager.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "cfy-manager.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "cfy-manager.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "cfy-manager.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "cfy-manager.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "cfy-manager.adminSecretName" -}}
{{- default (printf "%s-admin" (include "cfy-manager.fullname" .)) .Values.adminPassword.existingSecret }}
{{- end }}

{{- define "cfy-manager.hooksSecretName" -}}
{{- printf "%s-hooks" (include "cfy-manager.fullname" .) }}
{{- end }}

{{/*
A value kept across upgrades: the existing Secret's key when the release already has one,
else a fresh random string (helm template / first install).
*/}}
{{- define "cfy-manager.keptRandom" -}}
{{- $secret := lookup "v1" "Secret" .ctx.Release.Namespace .name }}
{{- $data := dict }}
{{- if $secret }}{{ $data = default (dict) $secret.data }}{{ end }}
{{- if hasKey $data .key }}
{{- index $data .key | b64dec }}
{{- else }}
{{- randAlphaNum 32 }}
{{- end }}
{{- end }}

{{/*
The cfy-init configuration (ConfigMap config.yaml): the chart's settings, then .Values.config
merged over them. Field names follow docs/config-reference.md.
*/}}
{{- define "cfy-manager.config" -}}
{{- $chart := dict
  "log" (dict "format" "json")
  "persist" (dict "store" "/cfy-persist" "required" true)
  "supervise" (dict "shutdown_deadline" (printf "%ds" (int .Values.shutdownDeadlineSeconds)))
  "hooks" (dict "listen" (printf "0.0.0.0:%d" (int .Values.hooks.port)) "token_file" "/etc/cfy-init/hooks/token")
}}
{{- if .Values.recoverySidecar.enabled }}
{{- $_ := set $chart "snapshot" (dict "archive_dir" "/cfy-snapshots" "keep" (int .Values.recoverySidecar.keep)) }}
{{- end }}
{{- toYaml (mustMergeOverwrite $chart (deepCopy .Values.config)) }}
{{- end }}
