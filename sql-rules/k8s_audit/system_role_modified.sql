-- id: k8s.system_role_modified
-- title: System role modified or deleted
-- severity: high
-- description: A built-in system:* ClusterRole or Role was updated, patched or
--    deleted. Tampering with system roles backdoors control-plane identities
--    (granting system:node everything, say) or breaks components. Reported
--    whoever makes the request; the only writes not reported are the ones the
--    cluster makes for itself (legitimate_rbac_write: the API server reconciling
--    its bootstrap policy, the aggregation controller, a managed platform's
--    labelled add-ons), and the roles add-on installers rewrite at upgrades
--    (addon_managed_system_roles). Failed requests are ignored.
-- mitre: T1098, T1078.004, T1222
-- source: k8s_audit
-- tags: attack, privilege_escalation, persistence, rbac
-- author: Vigil
-- references: https://kubernetes.io/docs/reference/access-authn-authz/rbac/#default-roles-and-role-bindings
-- based_on: panther:Kubernetes.SystemRole.Modified, falco:System ClusterRole Modified/Deleted
SELECT
  user_info.username AS username,
  verb AS verb,
  object_ref.resource AS resource,
  object_ref.name AS role,
  json_get_json(request_object, 'rules') AS rules,
  source_ips[1] AS source_ip,
  user_agent AS user_agent
FROM k8s_audit
WHERE object_ref.resource IN ('clusterroles', 'roles')
  AND verb IN ('update', 'patch', 'delete')
  AND starts_with(COALESCE(object_ref.name, ''), 'system:')
  AND NOT in_list(object_ref.name, 'addon_managed_system_roles')
  AND request_succeeded()
  AND NOT legitimate_rbac_write()
