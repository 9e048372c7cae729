-- id: k8s.role_write_permissions
-- title: Role or ClusterRole with write permissions created
-- severity: low
-- description: A Role or ClusterRole was created with write verbs (create, update, patch, delete, deletecollection or '*'). Low severity: useful to baseline RBAC changes and to spot over-permissive roles.
--    Roles created by control-plane components and failed requests are ignored.
-- mitre: T1098, T1222
-- source: k8s_audit
-- tags: attack, privilege_escalation, rbac
-- author: Vigil
-- references: https://kubernetes.io/docs/reference/access-authn-authz/rbac/#role-and-clusterrole
-- based_on: panther:Kubernetes.Role.WritePermissions, falco:ClusterRole With Write Privileges Created
SELECT
  user_info.username AS username,
  object_ref.resource AS resource,
  object_ref.namespace AS namespace,
  COALESCE(object_ref.name, json_get_str(request_object, 'metadata', 'name')) AS role,
  json_path_values(request_object, '$.rules[?@.verbs[?@ == ''create'' || @ == ''update'' || @ == ''patch'' || @ == ''delete'' || @ == ''deletecollection'' || @ == ''*'']].resources') AS matched_resources,
  json_path_values(request_object, '$.rules[?@.verbs[?@ == ''create'' || @ == ''update'' || @ == ''patch'' || @ == ''delete'' || @ == ''deletecollection'' || @ == ''*'']].verbs') AS matched_verbs,
  source_ips[1] AS source_ip
FROM k8s_audit
WHERE object_ref.resource IN ('roles', 'clusterroles')
  AND verb = 'create'
  AND COALESCE(stage, '') <> 'RequestReceived'
  AND COALESCE(response_status.code, 200) < 400
  AND NOT regexp_like(COALESCE(user_info.username, ''), '^(system:(node:|kube-|apiserver$|serviceaccount:kube-system:)|eks:|aks:|aksService$)')
  AND json_path_exists(request_object, '$.rules[?@.verbs[?@ == ''create'' || @ == ''update'' || @ == ''patch'' || @ == ''delete'' || @ == ''deletecollection'' || @ == ''*'']]')
