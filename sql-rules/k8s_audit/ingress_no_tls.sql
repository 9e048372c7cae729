-- id: k8s.ingress_no_tls
-- title: Ingress created without TLS
-- severity: low
-- description: An Ingress was created without a spec.tls section, so the
--    services behind it are exposed over plain HTTP and credentials or tokens
--    can be sniffed. Ingresses in system namespaces, requests without a request
--    body (Metadata audit level) and failed requests are ignored.
-- mitre: T1040, T1557
-- source: k8s_audit
-- tags: compliance, network
-- author: Vigil
-- references: https://kubernetes.io/docs/concepts/services-networking/ingress/#tls
-- based_on: panther:Kubernetes.Ingress.NoTLS, falco:Ingress Object without TLS Certificate Created
SELECT
  user_info.username AS username,
  object_ref.namespace AS namespace,
  object_name() AS ingress,
  json_path_values(request_object, '$.spec.rules[*].host') AS hosts,
  source_ips[1] AS source_ip
FROM k8s_audit
WHERE object_ref.resource = 'ingresses'
  AND COALESCE(object_ref.subresource, '') = ''
  AND verb = 'create'
  AND request_succeeded()
  AND request_object IS NOT NULL
  AND NOT in_system_namespace()
  AND COALESCE(json_length(request_object, 'spec', 'tls'), 0) = 0
