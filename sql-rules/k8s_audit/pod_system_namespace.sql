-- id: k8s.pod_system_namespace
-- title: Pod created in a system namespace
-- severity: medium
-- description: A user that is not a control-plane component created a pod
--    directly in kube-system, kube-public or kube-node-lease. Attackers hide
--    workloads among the system pods, where they often inherit privileged
--    service accounts. Subresources (evictions, bindings) and failures are ignored.
-- mitre: T1610, T1036.005
-- source: k8s_audit
-- tags: attack, defense_evasion, persistence
-- author: Vigil
-- references: https://kubernetes.io/docs/concepts/security/rbac-good-practices/
-- based_on: panther:Kubernetes.Pod.SystemNamespace, falco:Pod Created in Kube Namespace, sigma:kubernetes_audit_pod_in_system_namespace
SELECT
  user_info.username AS username,
  object_ref.namespace AS namespace,
  COALESCE(object_ref.name, json_get_str(request_object, 'metadata', 'name'), json_get_str(response_object, 'metadata', 'name')) AS pod,
  pod_spec.images AS images,
  source_ips[1] AS source_ip,
  user_agent AS user_agent
FROM k8s_audit
WHERE object_ref.resource = 'pods'
  AND COALESCE(object_ref.subresource, '') = ''
  AND verb = 'create'
  AND object_ref.namespace IN ('kube-system', 'kube-public', 'kube-node-lease')
  AND COALESCE(stage, '') <> 'RequestReceived'
  AND COALESCE(response_status.code, 200) < 400
  AND NOT regexp_like(COALESCE(user_info.username, ''), '^(system:(node:|kube-|apiserver$|serviceaccount:kube-system:)|eks:|aks:|aksService$)')
