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
  "snapshot" (dict "archive_dir" "/cfy-persist-snapshots" "keep" (int .Values.snapshots.keep))
}}
{{- toYaml (mustMergeOverwrite $chart (deepCopy .Values.config)) }}
{{- end }}

{{/*
The Swift container of cfy-init's off-host snapshot copies as a quoted (JSON) string, from
config.snapshot.remote of the chart's cfy-init config (`container` unset: cfy-init's
default); nothing when snapshot.remote is not set.
*/}}
{{- define "cfy-manager.remoteSnapshots" -}}
{{- $snapshot := get (include "cfy-manager.config" . | fromYaml) "snapshot" | default dict }}
{{- $remote := get $snapshot "remote" }}
{{- if kindIs "map" $remote }}
{{- toJson (ternary (get $remote "container") "cfy-manager-snapshots" (hasKey $remote "container")) }}
{{- end }}
{{- end }}

{{/*
An image reference: (dict "image" .Values.image "global" .Values.global). The registry is
image.registry, else global.repository (ONAP's), else none.
*/}}
{{- define "cfy-manager.image" -}}
{{- $registry := default .global.repository .image.registry }}
{{- if $registry }}{{ printf "%s/" (trimSuffix "/" $registry) }}{{ end }}{{ .image.repository }}:{{ .image.tag }}
{{- end }}

{{- define "cfy-manager.pullPolicy" -}}
{{- default .image.pullPolicy .global.pullPolicy }}
{{- end }}

{{- define "cfy-manager.serviceName" -}}
{{- default (include "cfy-manager.fullname" .) .Values.service.name }}
{{- end }}

{{- define "cfy-manager.headlessName" -}}
{{- printf "%s-headless" (include "cfy-manager.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
cfy-init's shutdown deadline in whole seconds (rounded up): config.supervise.shutdown_deadline
when set (a duration such as 300s, 5m or 1m30s), else shutdownDeadlineSeconds.
*/}}
{{- define "cfy-manager.deadlineSeconds" -}}
{{- $text := "" }}
{{- with .Values.config.supervise }}{{ with .shutdown_deadline }}{{ $text = toString . }}{{ end }}{{ end }}
{{- if not $text }}
{{- int .Values.shutdownDeadlineSeconds }}
{{- else }}
{{- $compact := $text | replace " " "" }}
{{- $parts := regexFindAll "[0-9]+(ms|s|m|h|d)" $compact -1 }}
{{- if or (not $parts) (ne (join "" $parts) $compact) }}
{{- fail (printf "config.supervise.shutdown_deadline %q: write it as whole numbers with units ms, s, m, h or d (300s, 5m, 1m30s) so the chart can derive terminationGracePeriodSeconds" $text) }}
{{- end }}
{{- $ms := 0 }}
{{- range $parts }}
{{- $n := int (regexFind "^[0-9]+" .) }}
{{- $unit := regexReplaceAll "^[0-9]+" . "" }}
{{- $ms = add $ms (mul $n (get (dict "ms" 1 "s" 1000 "m" 60000 "h" 3600000 "d" 86400000) $unit)) }}
{{- end }}
{{- div (add $ms 999) 1000 }}
{{- end }}
{{- end }}

{{/* The pod's grace period: the deadline in effect plus the margin. */}}
{{- define "cfy-manager.gracePeriod" -}}
{{- add (include "cfy-manager.deadlineSeconds" . | int) (int .Values.terminationGraceMarginSeconds) }}
{{- end }}
