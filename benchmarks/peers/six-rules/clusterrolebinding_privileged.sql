-- id: k8s.clusterrolebinding_privileged
-- title: ClusterRoleBinding to a privileged role
-- severity: high
-- description: A ClusterRoleBinding was created (or replaced) that grants a
--    privileged cluster role (privileged_cluster_roles: cluster-admin, admin,
--    system:masters, a control-plane role). This is
--    the usual way to escalate a foothold to full cluster control. Reported whoever makes the request, controller and kube-system
--    accounts included; the only writes not reported are the ones the cluster
--    makes for itself (legitimate_rbac_write: the API server's bootstrap policy,
--    a managed platform's labelled add-on objects).
--    Failed requests are ignored.
-- mitre: T1098, T1078.004
-- source: k8s_audit
-- tags: attack, privilege_escalation, persistence, rbac
-- author: Vigil
-- references: https://kubernetes.io/docs/reference/access-authn-authz/rbac/#user-facing-roles
-- based_on: panther:Kubernetes.ClusterRoleBinding.Privileged, falco:Attach to cluster-admin Role
SELECT
  user_info.username AS username,
  object_name() AS binding,
  bound_role() AS role,
  json_path_values(request_object, '$.subjects[*].name') AS subjects,
  json_path_values(request_object, '$.subjects[*].kind') AS subject_kinds,
  verb AS verb,
  source_ips[1] AS source_ip
FROM k8s_audit
WHERE object_ref.resource = 'clusterrolebindings'
  AND verb IN ('create', 'update', 'patch')
  AND request_succeeded()
  AND in_list(bound_role(), 'privileged_cluster_roles')
  AND NOT legitimate_rbac_write()
