{{/*
Criteria packs and the outside judge: the environment, mounts and volumes the refiner and
the coordinator get (both judge: the refiner serves judgements, the coordinator's prompt
sets and evaluation name criteria, and both send a sample to the outside judge).
Each helper renders a YAML list (read back with fromYamlArray).
*/}}
{{- define "spar.criteriaConfigMapName" -}}
{{- default (printf "%s-criteria" (include "spar.fullname" .)) .Values.criteria.existingConfigMap -}}
{{- end }}

{{- define "spar.judgingEnv" -}}
{{- if or .Values.criteria.packs .Values.criteria.existingConfigMap }}
- {name: SPAR_CRITERIA__DIR, value: /etc/spar/criteria}
{{- end }}
{{- with .Values.externalJudge }}
{{- if .url }}
- {name: SPAR_EXTERNAL_JUDGE__URL, value: {{ .url | quote }}}
- {name: SPAR_EXTERNAL_JUDGE__MODEL, value: {{ .model | quote }}}
- {name: SPAR_EXTERNAL_JUDGE__SAMPLE_FRACTION, value: {{ .sampleFraction | quote }}}
- {name: SPAR_EXTERNAL_JUDGE__TIMEOUT_S, value: {{ .timeoutSeconds | quote }}}
- {name: SPAR_EXTERNAL_JUDGE__RESPONSE_FORMAT, value: {{ .responseFormat | quote }}}
{{- if .apiKeySecret }}
- {name: SPAR_EXTERNAL_JUDGE__API_KEY_FILE, value: /etc/spar/external-judge/api-key}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{- define "spar.judgingMounts" -}}
{{- if or .Values.criteria.packs .Values.criteria.existingConfigMap }}
- {name: criteria, mountPath: /etc/spar/criteria, readOnly: true}
{{- end }}
{{- if and .Values.externalJudge.url .Values.externalJudge.apiKeySecret }}
- {name: external-judge, mountPath: /etc/spar/external-judge, readOnly: true}
{{- end }}
{{- end }}

{{- define "spar.judgingVolumes" -}}
{{- if or .Values.criteria.packs .Values.criteria.existingConfigMap }}
{{- /* A whole-ConfigMap volume (no subPath): the kubelet swaps in new contents, which the
services reload. */}}
- name: criteria
  configMap: {name: {{ include "spar.criteriaConfigMapName" . }}}
{{- end }}
{{- with .Values.externalJudge }}
{{- if and .url .apiKeySecret }}
- name: external-judge
  secret:
    secretName: {{ .apiKeySecret }}
    items: [{key: {{ .apiKeySecretKey }}, path: api-key}]
{{- end }}
{{- end }}
{{- end }}
