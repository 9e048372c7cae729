-- id: k8s.service_nodeport
-- title: NodePort service created
-- severity: medium
-- description: A Service of type NodePort was created or changed to NodePort. It
--    opens the port on every node's address, which can expose a workload outside
--    the cluster and around ingress controls and network policies. Reported
--    whoever makes the request, except a managed platform's labelled add-ons
--    (platform_managed_write); failed requests are ignored.
-- mitre: T1190, T1133
-- source: k8s_audit
-- tags: attack, initial_access, network
-- author: Vigil
-- references: https://kubernetes.io/docs/concepts/services-networking/service/#type-nodeport
-- based_on: panther:Kubernetes.Service.NodePort.Deployed, falco:Create NodePort Service
SELECT
  user_info.username AS username,
  verb AS verb,
  object_ref.namespace AS namespace,
  object_name() AS service,
  json_path_values(request_object, '$.spec.ports[*].nodePort') AS node_ports,
  json_path_values(request_object, '$.spec.ports[*].port') AS ports,
  source_ips[1] AS source_ip
FROM k8s_audit
WHERE object_ref.resource = 'services'
  AND COALESCE(object_ref.subresource, '') = ''
  AND verb IN ('create', 'update', 'patch')
  AND request_succeeded()
  AND json_get_str(request_object, 'spec', 'type') = 'NodePort'
  AND NOT platform_managed_write()
