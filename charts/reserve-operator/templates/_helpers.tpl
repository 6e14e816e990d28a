{{- define "reserve-operator.name" -}}reserve-operator{{- end }}

{{- define "reserve-operator.labels" -}}
app.kubernetes.io/name: reserve-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: coffeechain
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- define "reserve-operator.selector" -}}
app.kubernetes.io/name: reserve-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end }}

{{- define "reserve-operator.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- /* The restore groups as CEL string literals: 'a', 'b' */ -}}
{{- define "reserve-operator.restoreGroups" -}}
{{- $groups := list -}}
{{- range .Values.restore.groups -}}
{{- $groups = append $groups (printf "'%s'" .) -}}
{{- end -}}
{{- join ", " $groups -}}
{{- end }}
