-- id: k8s.system_account_rbac_change
-- title: RBAC changed by a controller, node or control-plane identity
-- severity: high
-- description: A kube-system service account (a controller or system add-on), a
--    node or a control-plane component (cluster_component_identities) created,
--    changed or deleted a Role, ClusterRole, RoleBinding or ClusterRoleBinding.
--    None of them changes RBAC as part of its work, except the writes the
--    cluster makes for itself (legitimate_rbac_write: the API server reconciling
--    its bootstrap policy, the aggregation controller filling aggregated roles,
--    a managed platform's labelled add-ons), which are not reported. Anything
--    else is a stolen or abused system credential: the clusterrole-aggregation-
--    controller's token patching a role it can escalate, a controller's token
--    minted with TokenRequest binding cluster-admin.
-- mitre: T1098, T1078.004, T1528
-- source: k8s_audit
-- tags: attack, privilege_escalation, persistence, rbac, stolen_credentials
-- author: Vigil
-- references: https://kubernetes.io/docs/reference/access-authn-authz/rbac/#privilege-escalation-prevention-and-bootstrapping
-- based_on: vigil:system_account_rbac_change, mitre:T1098
SELECT
  user_info.username AS username,
  verb AS verb,
  object_ref.resource AS resource,
  object_ref.namespace AS namespace,
  object_name() AS name,
  bound_role() AS role,
  source_ips[1] AS source_ip,
  user_agent AS user_agent
FROM k8s_audit
WHERE object_ref.resource IN ('roles', 'clusterroles', 'rolebindings', 'clusterrolebindings')
  AND verb IN ('create', 'update', 'patch', 'delete', 'deletecollection')
  AND request_succeeded()
  AND in_list(user_info.username, 'cluster_component_identities')
  AND NOT legitimate_rbac_write()
