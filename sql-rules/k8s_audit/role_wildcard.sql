-- id: k8s.role_wildcard
-- title: Role or ClusterRole with wildcard permissions created
-- severity: medium
-- description: A Role or ClusterRole was created with a rule granting every verb or every resource ('*'). Wildcards grant far more than intended, including permissions on resources added later, and are a common backdoor.
--    Roles created by control-plane components and failed requests are ignored.
-- mitre: T1098, T1078.004
-- source: k8s_audit
-- tags: attack, privilege_escalation, rbac
-- author: Vigil
-- references: https://kubernetes.io/docs/reference/access-authn-authz/rbac/#role-and-clusterrole
-- based_on: panther:Kubernetes.Role.Wildcard, falco:ClusterRole With Wildcard Created
SELECT
  user_info.username AS username,
  object_ref.resource AS resource,
  object_ref.namespace AS namespace,
  COALESCE(object_ref.name, json_get_str(request_object, 'metadata', 'name')) AS role,
  json_path_values(request_object, '$.rules[?@.verbs[?@ == ''*''] || @.resources[?@ == ''*'']].resources') AS matched_resources,
  json_path_values(request_object, '$.rules[?@.verbs[?@ == ''*''] || @.resources[?@ == ''*'']].verbs') AS matched_verbs,
  source_ips[1] AS source_ip
FROM k8s_audit
WHERE object_ref.resource IN ('roles', 'clusterroles')
  AND verb = 'create'
  AND COALESCE(stage, '') <> 'RequestReceived'
  AND COALESCE(response_status.code, 200) < 400
  AND NOT regexp_like(COALESCE(user_info.username, ''), '^(system:(node:|kube-|apiserver$|serviceaccount:kube-system:)|eks:|aks:|aksService$)')
  AND json_path_exists(request_object, '$.rules[?@.verbs[?@ == ''*''] || @.resources[?@ == ''*'']]')
