{{/* Names. Every define carries the chart's prefix: defines are global across subcharts. */}}

{{- define "llm-proxy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "llm-proxy.fullname" -}}
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

{{- define "llm-proxy.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels: the full set on every object; selectors use name + instance (+ component) only,
because a Deployment's selector is immutable. */}}
{{- define "llm-proxy.labels" -}}
helm.sh/chart: {{ include "llm-proxy.chart" . }}
{{ include "llm-proxy.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: llm-proxy
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "llm-proxy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "llm-proxy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* componentSelectorLabels: (dict "ctx" $ "component" "proxy") */}}
{{- define "llm-proxy.componentSelectorLabels" -}}
{{ include "llm-proxy.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "llm-proxy.componentLabels" -}}
{{ include "llm-proxy.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "llm-proxy.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "llm-proxy.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* image: (dict "image" .Values.image "ctx" $) -> repository:tag or repository@digest */}}
{{- define "llm-proxy.image" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (default .ctx.Chart.AppVersion .image.tag) }}
{{- end }}
{{- end }}

{{/* The Secret the pods read their keys from ("" when there is none). */}}
{{- define "llm-proxy.secretName" -}}
{{- if .Values.secrets.existingSecret }}
{{- .Values.secrets.existingSecret }}
{{- else if .Values.secrets.env }}
{{- include "llm-proxy.fullname" . }}
{{- end }}
{{- end }}

{{/* The policy, parsed. A YAML error fails the install with the parser's message. */}}
{{- define "llm-proxy.policy" -}}
{{- $policy := fromYaml (required "policy: the proxy.yaml text is required" .Values.policy) }}
{{- if hasKey $policy "Error" }}
{{- fail (printf "policy: not valid YAML: %s" (get $policy "Error")) }}
{{- end }}
{{- toJson $policy }}
{{- end }}

{{/* server.* of the policy with the proxy's defaults, as JSON. */}}
{{- define "llm-proxy.server" -}}
{{- $policy := include "llm-proxy.policy" . | fromJson }}
{{- $server := get $policy "server" | default dict }}
{{- if not (kindIs "map" $server) }}
{{- fail "policy: server must be a mapping" }}
{{- end }}
{{- $reload := true }}
{{- if hasKey $server "reload" }}{{ $reload = get $server "reload" }}{{ end }}
{{- $drain := 30 }}
{{- if hasKey $server "drain_timeout" }}{{ $drain = get $server "drain_timeout" }}{{ end }}
{{- if not (or (kindIs "float64" $drain) (kindIs "int64" $drain) (kindIs "int" $drain)) }}
{{- fail (printf "policy: server.drain_timeout must be a number of seconds, not %v" $drain) }}
{{- end }}
{{- $host := get $server "host" | default "0.0.0.0" }}
{{- if has $host (list "127.0.0.1" "localhost" "::1") }}
{{- fail (printf "policy: server.host %s is unreachable from outside the pod; use 0.0.0.0" $host) }}
{{- end }}
{{- dict "reload" $reload "drainTimeout" (ceil $drain | int) "port" (get $server "port" | default 8080 | int) | toJson }}
{{- end }}

{{/* terminationGracePeriodSeconds = preStop sleep + server.drain_timeout + 10 s (docs/semantics.md). */}}
{{- define "llm-proxy.terminationGracePeriodSeconds" -}}
{{- $server := include "llm-proxy.server" . | fromJson }}
{{- add (int .Values.preStopSleepSeconds) (int $server.drainTimeout) 10 }}
{{- end }}

{{/* REDIS_URL env entry, or nothing. */}}
{{- define "llm-proxy.redisEnv" -}}
{{- $sources := 0 }}
{{- if .Values.redis.url }}{{ $sources = add1 $sources }}{{ end }}
{{- if .Values.redis.existingSecret }}{{ $sources = add1 $sources }}{{ end }}
{{- if .Values.redis.enabled }}{{ $sources = add1 $sources }}{{ end }}
{{- if gt (int $sources) 1 }}
{{- fail "redis: set only one of redis.url, redis.existingSecret and redis.enabled" }}
{{- end }}
{{- if .Values.redis.url }}
- name: REDIS_URL
  value: {{ .Values.redis.url | quote }}
{{- else if .Values.redis.existingSecret }}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.existingSecret }}
      key: {{ .Values.redis.existingSecretKey }}
{{- else if .Values.redis.enabled }}
- name: REDIS_URL
  value: {{ printf "redis://%s-redis:6379/0" (include "llm-proxy.fullname" .) | quote }}
{{- end }}
{{- end }}

{{- define "llm-proxy.redisConfigured" -}}
{{- if or .Values.redis.url .Values.redis.existingSecret .Values.redis.enabled }}true{{ end }}
{{- end }}

{{/* Worker helpers: (dict "ctx" $ "worker" $entry) */}}
{{- define "llm-proxy.workerName" -}}
{{- printf "%s-worker-%s" (include "llm-proxy.fullname" .ctx | trunc 45 | trimSuffix "-") .worker.name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "llm-proxy.workerUrlEnv" -}}
{{- printf "LLM_PROXY_WORKER_%s_URL" (.name | upper | replace "-" "_") }}
{{- end }}

{{- define "llm-proxy.workerSelectorLabels" -}}
{{ include "llm-proxy.componentSelectorLabels" (dict "ctx" .ctx "component" "worker") }}
llm-proxy.io/worker: {{ .worker.name }}
{{- end }}

{{- define "llm-proxy.minReplicas" -}}
{{- if .Values.autoscaling.enabled }}{{ .Values.autoscaling.minReplicas }}{{ else }}{{ .Values.replicaCount }}{{ end }}
{{- end }}

{{/* Operators' backend (admin). The policy reads the admin key from $LLM_PROXY_ADMIN_KEY and
the store from $LLM_PROXY_ADMIN_STORE: PostgreSQL from a Secret, else a SQLite file on the
admin volume (one replica only). */}}
{{- define "llm-proxy.adminPostgres" -}}
{{- if and .Values.admin.enabled (or .Values.admin.postgresql.url .Values.admin.postgresql.existingSecret) }}true{{ end }}
{{- end }}

{{- define "llm-proxy.adminSqlite" -}}
{{- if and .Values.admin.enabled (not (include "llm-proxy.adminPostgres" .)) }}true{{ end }}
{{- end }}

{{/* The Secret the chart makes for admin ("" when none): the key from admin.key, the URL
from admin.postgresql.url. */}}
{{- define "llm-proxy.adminSecretName" -}}
{{- $admin := .Values.admin }}
{{- if and $admin.enabled (or (and $admin.key (not $admin.existingSecret)) (and $admin.postgresql.url (not $admin.postgresql.existingSecret))) }}
{{- printf "%s-admin" (include "llm-proxy.fullname" .) }}
{{- end }}
{{- end }}

{{- define "llm-proxy.adminClaimName" -}}
{{- .Values.admin.sqlite.persistence.existingClaim | default (printf "%s-admin" (include "llm-proxy.fullname" .)) }}
{{- end }}

{{/* LLM_PROXY_ADMIN_KEY and LLM_PROXY_ADMIN_STORE env entries, or nothing; the guards. */}}
{{- define "llm-proxy.adminEnv" -}}
{{- $admin := .Values.admin }}
{{- if $admin.enabled }}
{{- if and $admin.key $admin.existingSecret }}
{{- fail "admin: set only one of admin.key and admin.existingSecret" }}
{{- end }}
{{- if not (or $admin.key $admin.existingSecret) }}
{{- fail "admin.enabled: set admin.existingSecret (a Secret holding the admin key) or admin.key" }}
{{- end }}
{{- if and $admin.postgresql.url $admin.postgresql.existingSecret }}
{{- fail "admin.postgresql: set only one of url and existingSecret" }}
{{- end }}
{{- if not (and (contains "${LLM_PROXY_ADMIN_KEY}" .Values.policy) (contains "${LLM_PROXY_ADMIN_STORE" .Values.policy)) }}
{{- fail "admin.enabled: the policy needs admin: {key: \"${LLM_PROXY_ADMIN_KEY}\", store: \"${LLM_PROXY_ADMIN_STORE:-sqlite:///admin.db}\"} (as the default policy has)" }}
{{- end }}
{{- if and (include "llm-proxy.adminSqlite" .) (or (gt (int (include "llm-proxy.minReplicas" .)) 1) .Values.autoscaling.enabled) }}
{{- fail "admin: with more than one replica the runtime keys and the usage ledger must be shared: set admin.postgresql.url or admin.postgresql.existingSecret (or replicaCount: 1)" }}
{{- end }}
{{- $generated := include "llm-proxy.adminSecretName" . }}
- name: LLM_PROXY_ADMIN_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $admin.existingSecret | default $generated }}
      key: {{ ternary $admin.existingSecretKey "LLM_PROXY_ADMIN_KEY" (not (empty $admin.existingSecret)) }}
- name: LLM_PROXY_ADMIN_STORE
{{- if include "llm-proxy.adminPostgres" . }}
  valueFrom:
    secretKeyRef:
      name: {{ $admin.postgresql.existingSecret | default $generated }}
      key: {{ ternary $admin.postgresql.existingSecretKey "LLM_PROXY_ADMIN_STORE" (not (empty $admin.postgresql.existingSecret)) }}
{{- else }}
  value: "sqlite:////var/lib/llm-proxy/admin.db"
{{- end }}
{{- end }}
{{- end }}
