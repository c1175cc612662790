{{/* Names, labels and in-cluster addresses. */}}

{{- define "spar.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-scoped base name; role suffixes ("-coordinator-headless", 21 chars) must fit 63. */}}
{{- define "spar.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 42 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 42 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 42 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "spar.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "spar.labels" -}}
helm.sh/chart: {{ include "spar.chart" . }}
{{ include "spar.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: spar
{{- end }}

{{/* Labels that select every pod of the release (NetworkPolicy peers). */}}
{{- define "spar.selectorLabels" -}}
app.kubernetes.io/name: {{ include "spar.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of one role's objects; call with (dict "ctx" $ "role" "actor"). */}}
{{- define "spar.roleLabels" -}}
{{ include "spar.labels" .ctx }}
app.kubernetes.io/component: {{ .role }}
{{- end }}

{{- define "spar.roleSelector" -}}
{{ include "spar.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .role }}
{{- end }}

{{/* ClusterIP Service of a role: one stable name for clients. */}}
{{- define "spar.serviceName" -}}
{{- printf "%s-%s" (include "spar.fullname" .ctx) .role }}
{{- end }}

{{/* Headless Service of a role: one DNS record per ready pod, for discovery and round_robin. */}}
{{- define "spar.headlessName" -}}
{{- printf "%s-%s-headless" (include "spar.fullname" .ctx) .role }}
{{- end }}

{{- define "spar.fqdn" -}}
{{- printf "%s.%s.svc.%s" .name .ctx.Release.Namespace .ctx.Values.clusterDomain }}
{{- end }}

{{/*
gRPC target of a role as spar's clients should use it in the cluster: every replica through
the headless Service with round_robin (a ClusterIP pins one HTTP/2 connection to one pod).
*/}}
{{- define "spar.roleTarget" -}}
{{- $name := include "spar.headlessName" . }}
{{- printf "dns:///%s:%v" (include "spar.fqdn" (dict "ctx" .ctx "name" $name)) (index .ctx.Values.ports .role).grpc }}
{{- end }}

{{/* Plain HOST:PORT of a role's ClusterIP Service (single-replica roles, helm test). */}}
{{- define "spar.serviceTarget" -}}
{{- $name := include "spar.serviceName" . }}
{{- printf "%s:%v" (include "spar.fqdn" (dict "ctx" .ctx "name" $name)) (index .ctx.Values.ports .role).grpc }}
{{- end }}

{{- define "spar.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- printf "%s:%s-%s" .Values.image.repository $tag .Values.image.variant }}
{{- end }}

{{- define "spar.modelClaimName" -}}
{{- .Values.model.existingClaim }}
{{- end }}

{{- define "spar.trainerClaimName" -}}
{{- default (printf "%s-trainer-store" (include "spar.fullname" .)) .Values.trainer.persistence.existingClaim }}
{{- end }}

{{- define "spar.coordinatorServiceAccount" -}}
{{- printf "%s-coordinator" (include "spar.fullname" .) }}
{{- end }}

{{- define "spar.workloadServiceAccount" -}}
{{- printf "%s-workload" (include "spar.fullname" .) }}
{{- end }}

{{- define "spar.dashboardName" -}}
{{- printf "%s-dashboard" (include "spar.fullname" .) }}
{{- end }}

{{- define "spar.coordinatorClaimName" -}}
{{- default (printf "%s-coordinator-state" (include "spar.fullname" .)) .Values.coordinator.persistence.existingClaim }}
{{- end }}

{{/*
A ReadWriteOnce claim of a single-writer role; call with
(dict "ctx" $ "role" "trainer" "name" "..." "persistence" .Values.trainer.persistence).
*/}}
{{- define "spar.claim" -}}
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {{ .name }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "spar.roleLabels" (dict "ctx" .ctx "role" .role) | nindent 4 }}
  {{- if .persistence.retain }}
  annotations:
    # What the claim holds outlives the release; delete it by hand.
    helm.sh/resource-policy: keep
  {{- end }}
spec:
  accessModes: [ReadWriteOnce]
  {{- if not (kindIs "invalid" .persistence.storageClassName) }}
  storageClassName: {{ .persistence.storageClassName | quote }}
  {{- end }}
  resources:
    requests:
      storage: {{ .persistence.size }}
{{- end }}
