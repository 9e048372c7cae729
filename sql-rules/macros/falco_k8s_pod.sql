-- macro: falco_k8s_pod
-- description: The pod a Falco alert is about (output field k8s.pod.name);
--    NULL for an alert outside Kubernetes.
json_get_str(output_fields, 'k8s.pod.name')
