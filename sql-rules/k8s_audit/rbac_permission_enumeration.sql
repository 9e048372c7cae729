-- id: k8s.rbac_permission_enumeration
-- title: RBAC permissions enumerated (kubectl auth can-i --list)
-- severity: low
-- description: A user or workload service account created a
--    SelfSubjectRulesReview, i.e. asked the API server to list everything it is
--    allowed to do. It is the first thing attackers run with a freshly stolen
--    token, whoever made it: a stolen system account's token is enumerated the
--    same way.
-- mitre: T1069.003, T1613
-- source: k8s_audit
-- tags: attack, discovery
-- author: Vigil
-- references: https://kubernetes.io/docs/reference/access-authn-authz/authorization/#checking-api-access
-- based_on: sigma:kubernetes_audit_rbac_permisions_listing
SELECT
  user_info.username AS username,
  json_get_str(request_object, 'spec', 'namespace') AS namespace,
  source_ips[1] AS source_ip,
  user_agent AS user_agent
FROM k8s_audit
WHERE object_ref.resource = 'selfsubjectrulesreviews'
  AND verb = 'create'
  AND COALESCE(stage, '') <> 'RequestReceived'
