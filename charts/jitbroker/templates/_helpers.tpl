{{- define "jitbroker.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "jitbroker.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "jitbroker.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "jitbroker.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: pass (dict "root" $ "component" "api"). */}}
{{- define "jitbroker.selectorLabels" -}}
app.kubernetes.io/name: {{ include "jitbroker.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "jitbroker.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "jitbroker.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "jitbroker.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "jitbroker.signingKeySecret" -}}
{{- default (printf "%s-signing-key" (include "jitbroker.fullname" .)) .Values.signingKey.secretName -}}
{{- end -}}

{{- define "jitbroker.trialRedisHost" -}}
{{- printf "%s-redis" (include "jitbroker.fullname" .) -}}
{{- end -}}

{{/* Pod annotations: a config change rolls every pod. */}}
{{- define "jitbroker.podAnnotations" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- with .Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The JITBROKER_* environment every component shares. Secrets only by reference. */}}
{{- define "jitbroker.env" -}}
- name: JITBROKER_CONFIG_DIR
  value: /etc/jitbroker/config
- name: JITBROKER_SIGNING_KEY_FILE
  value: /etc/jitbroker/signing/{{ .Values.signingKey.key }}
{{- if .Values.signingKey.previous.secretName }}
- name: JITBROKER_SIGNING_PREVIOUS_KEY_FILE
  value: /etc/jitbroker/signing-previous/{{ .Values.signingKey.previous.key }}
{{- end }}
- name: JITBROKER_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
- name: JITBROKER_KEY_PREFIX
  value: {{ .Values.redis.keyPrefix | quote }}
# Audit: stdout (the cluster's log pipeline) and the Redis stream; the root fs is read-only.
- name: JITBROKER_AUDIT_FILE
  value: ""
- name: JITBROKER_AUDIT_STDOUT
  value: "true"
- name: JITBROKER_VAULT_ADDR
  value: {{ .Values.openbao.addr | quote }}
- name: JITBROKER_VAULT_TIMEOUT_SECONDS
  value: {{ .Values.openbao.timeoutSeconds | quote }}
- name: JITBROKER_VAULT_AUTH_METHOD
  value: {{ .Values.openbao.auth.method | quote }}
{{- if eq .Values.openbao.auth.method "kubernetes" }}
- name: JITBROKER_VAULT_KUBERNETES_ROLE
  value: {{ required "openbao.auth.kubernetes.role is required with the kubernetes auth method" .Values.openbao.auth.kubernetes.role | quote }}
- name: JITBROKER_VAULT_KUBERNETES_MOUNT
  value: {{ .Values.openbao.auth.kubernetes.mount | quote }}
- name: JITBROKER_VAULT_KUBERNETES_TOKEN_PATH
  value: /var/run/secrets/openbao/token
{{- else }}
- name: JITBROKER_VAULT_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ required "openbao.auth.token.secretName is required with the token auth method" .Values.openbao.auth.token.secretName }}
      key: {{ .Values.openbao.auth.token.key }}
{{- end }}
{{- if .Values.openbao.caCert.secretName }}
- name: JITBROKER_VAULT_CA_CERT
  value: /etc/jitbroker/openbao-ca/{{ .Values.openbao.caCert.key }}
{{- end }}
{{- if .Values.redis.trial.enabled }}
- name: JITBROKER_REDIS_URL
  value: {{ printf "redis://%s:6379/0" (include "jitbroker.trialRedisHost" .) | quote }}
{{- else if .Values.redis.secretName }}
- name: JITBROKER_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.secretName }}
      key: {{ .Values.redis.secretKey }}
{{- else }}
- name: JITBROKER_REDIS_URL
  value: {{ required "set redis.url, redis.secretName or redis.trial.enabled" .Values.redis.url | quote }}
{{- end }}
{{- if .Values.redis.celerySecretName }}
- name: JITBROKER_CELERY_BROKER_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.celerySecretName }}
      key: {{ .Values.redis.celerySecretKey }}
{{- else if .Values.redis.celeryUrl }}
- name: JITBROKER_CELERY_BROKER_URL
  value: {{ .Values.redis.celeryUrl | quote }}
{{- end }}
{{- range $name, $value := .Values.env }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}

{{- define "jitbroker.volumeMounts" -}}
- name: config
  mountPath: /etc/jitbroker/config
  readOnly: true
- name: signing-key
  mountPath: /etc/jitbroker/signing
  readOnly: true
{{- if .Values.signingKey.previous.secretName }}
- name: signing-key-previous
  mountPath: /etc/jitbroker/signing-previous
  readOnly: true
{{- end }}
- name: tmp
  mountPath: /tmp
{{- if eq .Values.openbao.auth.method "kubernetes" }}
- name: openbao-token
  mountPath: /var/run/secrets/openbao
  readOnly: true
{{- end }}
{{- if .Values.openbao.caCert.secretName }}
- name: openbao-ca
  mountPath: /etc/jitbroker/openbao-ca
  readOnly: true
{{- end }}
{{- end -}}

{{- define "jitbroker.volumes" -}}
- name: config
  configMap:
    name: {{ include "jitbroker.fullname" . }}-config
- name: signing-key
  secret:
    secretName: {{ include "jitbroker.signingKeySecret" . }}
    defaultMode: 0440
    items:
      - key: {{ .Values.signingKey.key }}
        path: {{ .Values.signingKey.key }}
{{- with .Values.signingKey.previous }}
{{- if .secretName }}
- name: signing-key-previous
  secret:
    secretName: {{ .secretName }}
    defaultMode: 0440
    items:
      - key: {{ .key }}
        path: {{ .key }}
{{- end }}
{{- end }}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- if eq .Values.openbao.auth.method "kubernetes" }}
# An audience-bound, short-lived, rotating token for OpenBao's Kubernetes auth only; the
# Kubernetes API token is not mounted at all.
- name: openbao-token
  projected:
    defaultMode: 0440
    sources:
      - serviceAccountToken:
          path: token
          expirationSeconds: {{ .Values.openbao.auth.kubernetes.expirationSeconds }}
          {{- with .Values.openbao.auth.kubernetes.audience }}
          audience: {{ . }}
          {{- end }}
{{- end }}
{{- if .Values.openbao.caCert.secretName }}
- name: openbao-ca
  secret:
    secretName: {{ .Values.openbao.caCert.secretName }}
    defaultMode: 0444
{{- end }}
{{- end -}}

{{/* Pod-level settings shared by every component: pass (dict "root" $ "component" "api"). */}}
{{- define "jitbroker.podSpec" -}}
serviceAccountName: {{ include "jitbroker.serviceAccountName" .root }}
automountServiceAccountToken: false
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- with .root.Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
securityContext:
{{- toYaml .root.Values.podSecurityContext | nindent 2 }}
{{- with .root.Values.nodeSelector }}
nodeSelector:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- with .root.Values.tolerations }}
tolerations:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- with .root.Values.affinity }}
affinity:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- if .root.Values.topologySpreadConstraints }}
topologySpreadConstraints:
{{- range .root.Values.topologySpreadConstraints }}
  - {{ toYaml (merge (dict "labelSelector" (dict "matchLabels" (include "jitbroker.selectorLabels" $ | fromYaml))) .) | nindent 4 | trim }}
{{- end }}
{{- end }}
volumes:
{{- include "jitbroker.volumes" .root | nindent 2 }}
{{- end -}}
