{{/* Chart name, overridable with nameOverride. */}}
{{- define "mcplane.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified name (release + chart), truncated to 63 characters (the DNS label limit). */}}
{{- define "mcplane.fullname" -}}
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

{{/* The metrics Service name (a DNS label: at most 63 characters with its suffix). */}}
{{- define "mcplane.metricsServiceName" -}}
{{- printf "%s-metrics" (include "mcplane.fullname" . | trunc 55 | trimSuffix "-") }}
{{- end }}

{{/* Chart label value: name-version. */}}
{{- define "mcplane.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "mcplane.labels" -}}
helm.sh/chart: {{ include "mcplane.chart" . }}
{{ include "mcplane.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mcplane
{{- end }}

{{/* Selector labels (immutable on a Deployment: never add to these). */}}
{{- define "mcplane.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mcplane.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* The operator's ServiceAccount name. */}}
{{- define "mcplane.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mcplane.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Watched namespaces as JSON (a list; empty means every namespace). */}}
{{- define "mcplane.watchNamespaces" -}}
{{- if .Values.watchNamespaces }}
{{- toJson .Values.watchNamespaces }}
{{- else if eq .Values.rbac.scope "namespaced" }}
{{- toJson (list .Release.Namespace) }}
{{- else }}
{{- toJson list }}
{{- end }}
{{- end }}

{{/* Image references. */}}
{{- define "mcplane.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "mcplane.sidecarImage" -}}
{{- printf "%s:%s" .Values.sidecarImage.repository (default .Chart.AppVersion .Values.sidecarImage.tag) }}
{{- end }}

{{/* The operator's namespaced permissions (used by the ClusterRole or by each Role). */}}
{{- define "mcplane.namespacedRules" -}}
- apiGroups: [mcplane.dev]
  resources: [mcpproxies]
  verbs: [get, list, watch, patch]
- apiGroups: [mcplane.dev]
  resources: [mcpproxies/status]
  verbs: [get, patch]
- apiGroups: [""]
  resources: [configmaps, services]
  verbs: [get, create, patch]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, create, patch, delete]
- apiGroups: [monitoring.coreos.com]
  resources: [servicemonitors]
  verbs: [get, create, patch, delete]
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
- apiGroups: [""]
  resources: [pods]
  verbs: [list]
- apiGroups: ["", events.k8s.io]
  resources: [events]
  verbs: [create]
- apiGroups: [kopf.dev]
  resources: [kopfpeerings]
  verbs: [get, list, watch, patch]
{{- end }}

{{/* Cluster-scoped permissions kopf needs in every mode (resource discovery). */}}
{{- define "mcplane.crdRules" -}}
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
{{- end }}

{{/* fullname-suffix, still a DNS label: the fullname is cut so that the whole fits in 63 characters.
     Called with (list . "suffix"). */}}
{{- define "mcplane.suffixedName" -}}
{{- $root := index . 0 }}
{{- $suffix := index . 1 }}
{{- printf "%s-%s" (include "mcplane.fullname" $root | trunc (int (sub 62 (len $suffix))) | trimSuffix "-") $suffix }}
{{- end }}

{{/* "true" when scraping goes through ServiceMonitors: asked for, and the Prometheus Operator's CRD is served. */}}
{{- define "mcplane.serviceMonitors" -}}
{{- if and .Values.monitoring.enabled (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1/ServiceMonitor") }}
{{- "true" }}
{{- end }}
{{- end }}

{{/* "true" when the operator pod carries prometheus.io/* annotations instead (no ServiceMonitor CRD). */}}
{{- define "mcplane.scrapeAnnotations" -}}
{{- if and .Values.monitoring.enabled (not (include "mcplane.serviceMonitors" .)) }}
{{- "true" }}
{{- end }}
{{- end }}

{{/* "true" when the PrometheusRule is rendered (asked for, and its CRD is served). */}}
{{- define "mcplane.prometheusRule" -}}
{{- if and .Values.monitoring.prometheusRule.enabled (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1/PrometheusRule") }}
{{- "true" }}
{{- end }}
{{- end }}

{{/* The job the operator ServiceMonitor gives the operator's series: the Prometheus Operator names it after
     the Service. */}}
{{- define "mcplane.operatorSelector" -}}
{{- .Values.monitoring.prometheusRule.operatorSelector | default (printf "job=%q, namespace=%q" (include "mcplane.metricsServiceName" .) .Release.Namespace) }}
{{- end }}
