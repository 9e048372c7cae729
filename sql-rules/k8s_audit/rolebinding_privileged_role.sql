-- id: k8s.rolebinding_privileged_role
-- title: RoleBinding to a privileged cluster role
-- severity: medium
-- description: A namespaced RoleBinding was created or replaced that grants the
--    cluster-admin or admin ClusterRole inside a namespace. Within that namespace
--    the subjects get full control, including every secret and the right to
--    create RBAC objects there. Bindings made by control-plane components and
--    failed requests are ignored (ClusterRoleBindings are covered by
--    k8s.clusterrolebinding_privileged).
-- mitre: T1098, T1078
-- source: k8s_audit
-- tags: attack, privilege_escalation, persistence, rbac
-- author: Vigil
-- references: https://kubernetes.io/docs/reference/access-authn-authz/rbac/#user-facing-roles
-- based_on: falco:Attach to cluster-admin Role, sigma:kubernetes_audit_rolebinding_modification
SELECT
  user_info.username AS username,
  object_ref.namespace AS namespace,
  COALESCE(object_ref.name, json_get_str(request_object, 'metadata', 'name')) AS binding,
  json_get_str(request_object, 'roleRef', 'name') AS role,
  json_path_values(request_object, '$.subjects[*].name') AS subjects,
  verb AS verb,
  source_ips[1] AS source_ip
FROM k8s_audit
WHERE object_ref.resource = 'rolebindings'
  AND verb IN ('create', 'update', 'patch')
  AND COALESCE(stage, '') <> 'RequestReceived'
  AND COALESCE(response_status.code, 200) < 400
  AND NOT regexp_like(COALESCE(user_info.username, ''), '^(system:(node:|kube-|apiserver$|serviceaccount:kube-system:)|eks:|aks:|aksService$)')
  AND json_get_str(request_object, 'roleRef', 'kind') = 'ClusterRole'
  AND json_get_str(request_object, 'roleRef', 'name') IN ('cluster-admin', 'admin')
