{{/* The release's full name, at most 63 characters (a DNS label). */}}
{{- define "posthorn.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "posthorn.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "posthorn.labels" -}}
{{ include "posthorn.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "posthorn.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "posthorn.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "posthorn.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* What src/operator/ does with namespaced objects: the ClusterRole's rules, or each
watched namespace's Role. "create" goes with "patch" on applied kinds: a server-side
apply that creates the object is authorized as create. */}}
{{- define "posthorn.rules" -}}
# The controller's main watch; it never writes a MailServer's spec or metadata.
- apiGroups: [posthorn.dev]
  resources: [mailservers]
  verbs: [get, list, watch]
# Conditions, observedGeneration, endpoints, DNS records (server-side apply).
- apiGroups: [posthorn.dev]
  resources: [mailservers/status]
  verbs: [patch]
# Owned and watched: applied server-side, never deleted by hand (garbage collection
# through owner references removes them with their MailServer).
- apiGroups: [apps]
  resources: [statefulsets]
  verbs: [get, list, watch, create, patch]
- apiGroups: [""]
  resources: [services, configmaps]
  verbs: [get, list, watch, create, patch]
# Watched to see changes of the Secrets MailServers refer to (users, TLS, DKIM, relay
# credentials) and of those it generated. The watch asks for metadata only, so no
# Secret's data is cached; data is read (get) only of the Secrets a MailServer uses.
# The one broad permission: list/watch of Secrets cannot be narrowed by name in RBAC
# (watchNamespaces narrows it to those namespaces). Generated Secrets (DKIM key,
# self-signed TLS) are created once and never updated or deleted by the operator.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch, create]
# The Deployment of operators before the StatefulSet: watched, scaled to 0 once the
# StatefulSet is Ready, deleted when its pods are gone. Never created. (The queue
# claims are the StatefulSet controller's to create; the operator never touches them.)
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, patch, delete]
# Scale-down drain: the pods that go away are annotated with where to hand their
# queues; a pod that stays but had begun draining (a scale back up) is restarted.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, patch, delete]
# Optional objects: applied when wanted, deleted when the spec no longer wants them.
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, create, patch, delete]
- apiGroups: [cert-manager.io]
  resources: [certificates]
  verbs: [get, create, patch, delete]
# DNSEndpoints are also watched (metadata only): ExternalDNS's status update decides
# DNSPublished.
- apiGroups: [externaldns.k8s.io]
  resources: [dnsendpoints]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, create, patch, delete]
# Events about MailServers (kube-rs' recorder: created, then patched as a series).
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end -}}

