-- id: k8s.clusterrolebinding_privileged
-- title: ClusterRoleBinding to a privileged role
-- severity: high
-- description: A ClusterRoleBinding was created (or replaced) that grants a
--    privileged cluster role: cluster-admin, admin, system:masters, or a
--    control-plane role (kube-controller-manager, kube-scheduler, node). This is
--    the usual way to escalate a foothold to full cluster control. Bindings made
--    by control-plane components and failed requests are ignored.
-- mitre: T1098, T1078.004
-- source: k8s_audit
-- tags: attack, privilege_escalation, persistence, rbac
-- author: Vigil
-- references: https://kubernetes.io/docs/reference/access-authn-authz/rbac/#user-facing-roles
-- based_on: panther:Kubernetes.ClusterRoleBinding.Privileged, falco:Attach to cluster-admin Role
SELECT
  user_info.username AS username,
  COALESCE(object_ref.name, json_get_str(request_object, 'metadata', 'name')) AS binding,
  json_get_str(request_object, 'roleRef', 'name') AS role,
  json_path_values(request_object, '$.subjects[*].name') AS subjects,
  json_path_values(request_object, '$.subjects[*].kind') AS subject_kinds,
  verb AS verb,
  source_ips[1] AS source_ip
FROM k8s_audit
WHERE object_ref.resource = 'clusterrolebindings'
  AND verb IN ('create', 'update', 'patch')
  AND COALESCE(stage, '') <> 'RequestReceived'
  AND COALESCE(response_status.code, 200) < 400
  AND NOT regexp_like(COALESCE(user_info.username, ''), '^(system:(node:|kube-|apiserver$|serviceaccount:kube-system:)|eks:|aks:|aksService$)')
  AND json_get_str(request_object, 'roleRef', 'name') IN (
    'cluster-admin', 'admin', 'system:masters', 'system:kube-controller-manager',
    'system:kube-scheduler', 'system:node', 'system:controller:clusterrole-aggregation-controller')
