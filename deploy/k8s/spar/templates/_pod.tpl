{{/*
The pod template of one role. Call with
  (dict "ctx" $ "role" "actor" "args" (list ...) "engine" true "shm" true "model" true "env" (list ...)
        "volumes" (list ...) "mounts" (list ...) "serviceAccount" "name" "kubeApi" false
        "openaiPort" 0)
engine: the pod runs a vLLM engine (engine settings); shm: it gets a memory-backed /dev/shm
(PyTorch, NCCL) of shm.sizeLimit, or of "shmSizeLimit" when given; model: it loads the base
model (init container or model claim); kubeApi: it talks to the Kubernetes API; openaiPort
(refiner): the port of the OpenAI-compatible HTTP endpoint, which readiness then probes too.
*/}}
{{- define "spar.podTemplate" -}}
{{- $ := .ctx -}}
{{- $role := .role -}}
{{- $rv := index $.Values $role -}}
{{- $ports := index $.Values.ports $role -}}
metadata:
  labels:
    {{- include "spar.roleLabels" (dict "ctx" $ "role" $role) | nindent 4 }}
    {{- with $rv.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with $rv.podAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  serviceAccountName: {{ .serviceAccount }}
  automountServiceAccountToken: {{ .kubeApi }}
  {{- with $.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $.Values.podSecurityContext | nindent 4 }}
  {{- with $rv.runtimeClassName }}
  runtimeClassName: {{ . }}
  {{- end }}
  {{- with $rv.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  terminationGracePeriodSeconds: {{ $rv.terminationGracePeriodSeconds }}
  {{- with $rv.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $rv.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $rv.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $rv.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if and .model (eq $.Values.model.source "prepare") }}
  initContainers:
    # Materialises the default model into the cache volume (idempotent; about a minute).
    - name: model-prepare
      image: {{ include "spar.image" $ }}
      imagePullPolicy: {{ $.Values.image.pullPolicy }}
      command: ["spar"]
      args: ["model", "prepare"]
      env:
        - {name: SPAR_CACHE_DIR, value: /var/cache/spar}
        - {name: HF_HUB_OFFLINE, value: "1"}
        {{- with $.Values.model.prepare.env }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      resources:
        {{- toYaml $.Values.model.prepare.resources | nindent 8 }}
      securityContext:
        {{- toYaml $.Values.securityContext | nindent 8 }}
      volumeMounts:
        - {name: cache, mountPath: /var/cache/spar}
  {{- end }}
  containers:
    - name: {{ $role }}
      image: {{ include "spar.image" $ }}
      imagePullPolicy: {{ $.Values.image.pullPolicy }}
      command: ["spar"]
      args:
        {{- toYaml .args | nindent 8 }}
        - --host
        - "0.0.0.0"
        - --port
        - {{ $ports.grpc | quote }}
        - --metrics-port
        - {{ $ports.metrics | quote }}
        {{- if and .model (eq $.Values.model.source "pvc") }}
        - --model
        - {{ printf "/models/%s" $.Values.model.path | trimSuffix "/" | quote }}
        {{- end }}
      ports:
        - {name: grpc, containerPort: {{ $ports.grpc }}, protocol: TCP}
        - {name: metrics, containerPort: {{ $ports.metrics }}, protocol: TCP}
        {{- with .openaiPort }}
        - {name: openai, containerPort: {{ . }}, protocol: TCP}
        {{- end }}
      env:
        - {name: SPAR_CACHE_DIR, value: /var/cache/spar}
        - {name: SPAR_LOG_LEVEL, value: {{ $.Values.logLevel | quote }}}
        - {name: HF_HUB_OFFLINE, value: "1"}
        - name: POD_NAME
          valueFrom: {fieldRef: {fieldPath: metadata.name}}
        - name: POD_NAMESPACE
          valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
        {{- /* Where spar's clients in this pod find the other roles (spar_cli.commands.flags). */}}
        - {name: SPAR_ACTOR_TARGET, value: {{ include "spar.roleTarget" (dict "ctx" $ "role" "actor") | quote }}}
        - {name: SPAR_REFINER_TARGET, value: {{ include "spar.roleTarget" (dict "ctx" $ "role" "refiner") | quote }}}
        {{- if $.Values.trainer.enabled }}
        - {name: SPAR_TRAINER_TARGET, value: {{ include "spar.serviceTarget" (dict "ctx" $ "role" "trainer") | quote }}}
        {{- end }}
        {{- if $.Values.coordinator.enabled }}
        - {name: SPAR_COORDINATOR_TARGET, value: {{ include "spar.serviceTarget" (dict "ctx" $ "role" "coordinator") | quote }}}
        {{- end }}
        {{- if .engine }}
        {{- with $.Values.engine }}
        - {name: SPAR_ENGINE__DTYPE, value: {{ .dtype | quote }}}
        - {name: SPAR_ENGINE__MAX_MODEL_LEN, value: {{ .maxModelLen | quote }}}
        - {name: SPAR_ENGINE__ENFORCE_EAGER, value: {{ .enforceEager | quote }}}
        - {name: SPAR_ENGINE__GPU_MEMORY_UTILIZATION, value: {{ .gpuMemoryUtilization | quote }}}
        - {name: SPAR_ENGINE__KV_CACHE_GIB, value: {{ .kvCacheGib | quote }}}
        - {name: SPAR_ENGINE__ENABLE_PREFIX_CACHING, value: {{ .enablePrefixCaching | quote }}}
        - {name: SPAR_ENGINE__MAX_LORA_RANK, value: {{ .maxLoraRank | quote }}}
        - {name: SPAR_ENGINE__MAX_LORAS, value: {{ .maxLoras | quote }}}
        - {name: SPAR_ENGINE__MAX_NUM_SEQS, value: {{ .maxNumSeqs | quote }}}
        {{- end }}
        {{- end }}
        {{- with (include "spar.securityEnv" $) }}{{ . | nindent 8 }}{{- end }}
        {{- with .env }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
        {{- with $.Values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
        {{- with $rv.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- $handler := include "spar.probeHandler" (dict "ctx" $ "port" $ports.grpc) }}
      startupProbe:
        {{- $handler | nindent 8 }}
        {{- toYaml $.Values.probes.startup | nindent 8 }}
      readinessProbe:
        {{- if .openaiPort }}
        {{- include "spar.openaiProbeHandler" (dict "ctx" $ "port" $ports.grpc "openaiPort" .openaiPort) | nindent 8 }}
        {{- else }}
        {{- $handler | nindent 8 }}
        {{- end }}
        {{- toYaml $.Values.probes.readiness | nindent 8 }}
      livenessProbe:
        {{- $handler | nindent 8 }}
        {{- toYaml $.Values.probes.liveness | nindent 8 }}
      resources:
        {{- include "spar.resources" (dict "ctx" $ "rv" $rv) | nindent 8 }}
      securityContext:
        {{- toYaml $.Values.securityContext | nindent 8 }}
      volumeMounts:
        - {name: cache, mountPath: /var/cache/spar}
        {{- if .shm }}
        - {name: shm, mountPath: /dev/shm}
        {{- end }}
        {{- if and .model (eq $.Values.model.source "pvc") }}
        - {name: model, mountPath: /models, readOnly: true}
        {{- end }}
        {{- with (include "spar.securityMounts" $) }}{{ . | nindent 8 }}{{- end }}
        {{- with .mounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: cache
      emptyDir: {sizeLimit: {{ $.Values.cache.sizeLimit }}}
    {{- if .shm }}
    - name: shm
      emptyDir: {medium: Memory, sizeLimit: {{ default $.Values.shm.sizeLimit .shmSizeLimit }}}
    {{- end }}
    {{- if and .model (eq $.Values.model.source "pvc") }}
    - name: model
      persistentVolumeClaim: {claimName: {{ include "spar.modelClaimName" $ }}, readOnly: true}
    {{- end }}
    {{- with (include "spar.securityVolumes" $) }}{{ . | nindent 4 }}{{- end }}
    {{- with .volumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}

{{/*
Probe handler: a native gRPC probe on plaintext ports. Kubelet's gRPC probe cannot speak
TLS, so with TLS on the probe runs `spar health` inside the container instead.
*/}}
{{- define "spar.probeHandler" -}}
{{- if .ctx.Values.tls.enabled -}}
exec:
  command: ["spar", "health", "--target", "localhost:{{ .port }}"]
{{- else -}}
grpc:
  port: {{ .port }}
{{- end }}
{{- end }}

{{/*
Readiness of a refiner that also serves the OpenAI-compatible HTTP endpoint: its /health
(200 once the engine is warm, 503 while draining). With TLS, `spar health` asks both the
gRPC and the HTTP port with the pod's certificate (kubelet cannot present one).
*/}}
{{- define "spar.openaiProbeHandler" -}}
{{- if .ctx.Values.tls.enabled -}}
exec:
  command: ["spar", "health", "--target", "localhost:{{ .port }}", "--http-port", "{{ .openaiPort }}"]
{{- else -}}
httpGet:
  path: /health
  port: openai
{{- end }}
{{- end }}

{{/* A role's resources with its GPUs added to requests and limits. */}}
{{- define "spar.resources" -}}
{{- $res := deepCopy (default dict .rv.resources) }}
{{- $gpu := int (default 0 .rv.gpu) }}
{{- if gt $gpu 0 }}
{{- $requests := default dict $res.requests }}
{{- $limits := default dict $res.limits }}
{{- $_ := set $requests .ctx.Values.gpuResource $gpu }}
{{- $_ := set $limits .ctx.Values.gpuResource $gpu }}
{{- $_ := set $res "requests" $requests }}
{{- $_ := set $res "limits" $limits }}
{{- end }}
{{- toYaml $res }}
{{- end }}

{{/*
TLS and auth: the files every server and client reads, named by environment. Without TLS
plaintext must be allowed explicitly (spar refuses to serve without a certificate
otherwise). With TLS, clients check every peer's certificate against one name the shared
certificate covers, since the coordinator reaches replicas by pod IP.
*/}}
{{- define "spar.securityEnv" -}}
{{- if .Values.tls.enabled }}
- {name: SPAR_TLS__CERT_FILE, value: /etc/spar/tls/tls.crt}
- {name: SPAR_TLS__KEY_FILE, value: /etc/spar/tls/tls.key}
- {name: SPAR_TLS__CA_FILE, value: /etc/spar/tls/ca.crt}
- {name: SPAR_TLS__SERVER_NAME, value: {{ default (include "spar.fqdn" (dict "ctx" . "name" (include "spar.serviceName" (dict "ctx" . "role" "refiner")))) .Values.tls.serverName | quote }}}
{{- else }}
- {name: SPAR_TLS__PLAINTEXT, value: "true"}
{{- end }}
{{- if .Values.auth.enabled }}
- {name: SPAR_AUTH__TOKENS_FILE, value: /etc/spar/auth/tokens}
- {name: SPAR_AUTH__TOKEN_FILE, value: /etc/spar/auth/token}
{{- end }}
{{- end }}

{{- define "spar.securityMounts" -}}
{{- if .Values.tls.enabled }}
- {name: tls, mountPath: /etc/spar/tls, readOnly: true}
{{- end }}
{{- if .Values.auth.enabled }}
- {name: auth, mountPath: /etc/spar/auth, readOnly: true}
{{- end }}
{{- end }}

{{- define "spar.securityVolumes" -}}
{{- if .Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ .Values.tls.existingSecret }}
    defaultMode: 0440
    items:
      - {key: tls.crt, path: tls.crt}
      - {key: tls.key, path: tls.key}
      - {key: ca.crt, path: ca.crt}
{{- end }}
{{- if .Values.auth.enabled }}
- name: auth
  secret:
    secretName: {{ .Values.auth.existingSecret }}
    defaultMode: 0440
    items:
      - {key: {{ .Values.auth.tokensKey }}, path: tokens}
      - {key: {{ .Values.auth.clientTokenKey }}, path: token}
{{- end }}
{{- end }}
