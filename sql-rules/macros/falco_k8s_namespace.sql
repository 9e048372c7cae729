-- macro: falco_k8s_namespace
-- description: The namespace of the pod a Falco alert is about (output
--    field k8s.ns.name); NULL for an alert outside Kubernetes.
json_get_str(output_fields, 'k8s.ns.name')
