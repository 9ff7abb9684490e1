{{/*
Names and labels shared by every template. Resource names are cut to 63 characters, the
DNS-label limit most Kubernetes names must respect.
*/}}

{{- define "psjob-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "psjob-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else if hasPrefix .Release.Name $name }}
{{- /* release "psjob": "psjob-operator", not "psjob-psjob-operator" */}}
{{- $name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "psjob-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "psjob-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "psjob-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "psjob-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "psjob-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "psjob-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false: name the existing ServiceAccount the operator runs as" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "psjob-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
What the operator does to PSJobs and their children, in every namespace it watches. Each rule
is the least the operator needs; tests/chart/test_rbac.py holds the reason for every verb and
fails when a verb is added here without one.
*/}}
{{- define "psjob-operator.jobRules" -}}
# Watch PSJobs; patch/update for kopf's own marks on them; delete for ttlSecondsAfterFinished.
- apiGroups: ["psjob.dev"]
  resources: ["psjobs"]
  verbs: ["get", "list", "watch", "patch", "update", "delete"]
# Write the status that kubectl, Argo CD and Flux read.
- apiGroups: ["psjob.dev"]
  resources: ["psjobs/status"]
  verbs: ["get", "patch", "update"]
# The server and worker pods and their headless services. Never update: they are replaced.
- apiGroups: [""]
  resources: ["pods", "services"]
  verbs: ["get", "list", "watch", "create", "delete"]
# Each job's authentication Secret (PSJOB_SECRET): create only, never read, list or delete
# (the garbage collector deletes it with its job), so the operator reads no one's Secrets.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["create"]
# Events on PSJobs, for `kubectl describe`.
- apiGroups: ["", "events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
# Gang scheduling: one PodGroup per job when Volcano or the scheduler-plugins are installed.
- apiGroups: ["scheduling.volcano.sh", "scheduling.x-k8s.io"]
  resources: ["podgroups"]
  verbs: ["get", "create", "delete"]
{{- if .Values.networkPolicy.enabled }}
# Each job's NetworkPolicy: create only (the garbage collector deletes it with its job).
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["create"]
{{- end }}
{{- if .Values.kueue.enabled }}
# Kueue (docs/kueue.md): each queued job's Workload; never update or delete (the garbage
# collector deletes it with its job).
- apiGroups: ["kueue.x-k8s.io"]
  resources: ["workloads"]
  verbs: ["get", "list", "watch", "create"]
# Release an evicted job's quota reservation; mark a finished job's Workload Finished.
- apiGroups: ["kueue.x-k8s.io"]
  resources: ["workloads/status"]
  verbs: ["patch"]
{{- end }}
{{- end }}
