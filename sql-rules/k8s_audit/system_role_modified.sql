-- id: k8s.system_role_modified
-- title: System role modified or deleted
-- severity: high
-- description: A built-in system:* ClusterRole or Role was updated, patched or
--    deleted by someone other than a control-plane component. Tampering with
--    system roles backdoors control-plane identities (e.g. granting system:node
--    everything) or breaks components. Roles that add-ons legitimately manage
--    (system:coredns, system:managed-certificate-controller) and failed requests
--    are ignored.
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
  json_path_values(request_object, '$.rules[*].verbs') AS new_verbs,
  source_ips[1] AS source_ip,
  user_agent AS user_agent
FROM k8s_audit
WHERE object_ref.resource IN ('clusterroles', 'roles')
  AND verb IN ('update', 'patch', 'delete')
  AND starts_with(COALESCE(object_ref.name, ''), 'system:')
  AND object_ref.name NOT IN ('system:coredns', 'system:managed-certificate-controller')
  AND COALESCE(stage, '') <> 'RequestReceived'
  AND COALESCE(response_status.code, 200) < 400
  AND NOT regexp_like(COALESCE(user_info.username, ''), '^(system:(node:|kube-|apiserver$|serviceaccount:kube-system:)|eks:|aks:|aksService$)')
