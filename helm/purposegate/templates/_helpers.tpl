{{/* The chart's name, overridable. */}}
{{- define "purposegate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: used for every object the chart creates. */}}
{{- define "purposegate.fullname" -}}
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

{{/* The standard app.kubernetes.io labels. */}}
{{- define "purposegate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "purposegate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: purposegate
{{- end }}

{{- define "purposegate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "purposegate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: decision-server
{{- end }}

{{- define "purposegate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "purposegate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "purposegate.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Where the webhook's TLS pair comes from: the user's Secret, cert-manager's, or one the chart makes. */}}
{{- define "purposegate.webhookSecretName" -}}
{{- default (printf "%s-webhook-tls" (include "purposegate.fullname" .)) .Values.injection.tls.secretName }}
{{- end }}

{{/* Whether a policy is mounted (inline or an existing ConfigMap). */}}
{{- define "purposegate.policyConfigMap" -}}
{{- if .Values.policy.existingConfigMap }}
{{- .Values.policy.existingConfigMap }}
{{- else if .Values.policy.inline }}
{{- printf "%s-policy" (include "purposegate.fullname" .) }}
{{- end }}
{{- end }}

{{/* The Secret with the server's TLS pair and the sidecars' CA (tls.enabled). */}}
{{- define "purposegate.tlsSecretName" -}}
{{- if .Values.tls.certManager.enabled }}
{{- printf "%s-tls" (include "purposegate.fullname" .) }}
{{- else if .Values.tls.secretName }}
{{- .Values.tls.secretName }}
{{- else }}
{{- fail "tls.enabled needs tls.secretName or tls.certManager.enabled: the server's certificate and the CA of the sidecars' certificates" }}
{{- end }}
{{- end }}

{{/*
Who may obtain purpose contexts: the issuers given. A signing key without
them refuses to render: a pod's own SPIFFE ID is its app's too, so no
default can tell a sidecar from the app beside it.
*/}}
{{- define "purposegate.purposeContextIssuers" -}}
{{- if not .Values.purposeContexts.issuers -}}
{{- fail "purposeContexts.issuers must name the PEPs' identities (a sidecar identity no app holds, e.g. spiffe://<trust-domain>/purposegate-sidecar/*, or a DNS name), or [\"*\"] for any caller: contexts signed for a pod's own SPIFFE ID prove nothing, as its app holds it too" -}}
{{- end -}}
{{- join "," .Values.purposeContexts.issuers -}}
{{- end }}

{{/*
Whether choices are kept in a database the replicas share ("true" or "").
Recorded choices kept in memory are one replica's: with writers and no
database, more than one replica would decide on different choices.
*/}}
{{- define "purposegate.choicesDatabase" -}}
{{- if .Values.choices.database.urlSecret.name -}}
true
{{- else if and .Values.choices.writers (or .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1)) -}}
{{- fail "choices.writers without choices.database.urlSecret: choices kept in memory are one replica's, and replicas would decide on different choices; give a PostgreSQL database (choices.database.urlSecret) or replicaCount: 1 without autoscaling" -}}
{{- end -}}
{{- end }}

{{/*
--choices-writers, the globs joined.
*/}}
{{- define "purposegate.choicesWriters" -}}
{{- join "," .Values.choices.writers -}}
{{- end }}
