-- id: k8s.rolebinding_privileged_role
-- title: RoleBinding to a privileged cluster role
-- severity: medium
-- description: A namespaced RoleBinding was created or replaced that grants the
--    cluster-admin or admin ClusterRole inside a namespace. Within that namespace
--    the subjects get full control, including every secret and the right to
--    create RBAC objects there. Reported whoever makes the request, controller and kube-system
--    accounts included; the only writes not reported are the ones the cluster
--    makes for itself (legitimate_rbac_write: the API server's bootstrap policy,
--    a managed platform's labelled add-on objects).
--    Failed requests are ignored (ClusterRoleBindings are covered by
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
  object_name() AS binding,
  bound_role() AS role,
  json_path_values(request_object, '$.subjects[*].name') AS subjects,
  verb AS verb,
  source_ips[1] AS source_ip
FROM k8s_audit
WHERE object_ref.resource = 'rolebindings'
  AND verb IN ('create', 'update', 'patch')
  AND request_succeeded()
  AND json_get_str(request_object, 'roleRef', 'kind') = 'ClusterRole'
  AND bound_role() IN ('cluster-admin', 'admin')
  AND NOT legitimate_rbac_write()
