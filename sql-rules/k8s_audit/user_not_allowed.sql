-- id: k8s.user_not_allowed
-- title: API used by a person or external identity outside the site's allowed users
-- severity: medium
-- description: A request succeeded for an identity that is neither one of the
--    cluster's own (cluster_identities: service accounts, nodes, control plane)
--    nor one of the site's allowed_users (a site policy, empty as shipped:
--    quiet until the site lists its users). A new person, a forgotten
--    kubeconfig, or an attacker's own certificate. The cluster's identities are
--    this rule's scope, not an exclusion: k8s.system_principal_outside_cluster
--    and the other rules watch what they do. Suppressed for an hour per identity.
-- mitre: T1078, T1078.004
-- source: k8s_audit
-- tags: site_policy, initial_access
-- author: Vigil
-- references: https://kubernetes.io/docs/reference/access-authn-authz/authentication/
-- based_on: falco:Disallowed K8s User
-- suppress: 1h
-- suppress_key: username
SELECT
  user_info.username AS username,
  user_info.groups AS groups,
  verb AS verb,
  object_ref.resource AS resource,
  object_ref.namespace AS namespace,
  source_ips[1] AS source_ip,
  user_agent AS user_agent
FROM k8s_audit
WHERE final_record()
  AND COALESCE(response_status.code, 200) < 400
  AND cardinality(list('allowed_users')) > 0
  AND user_info.username IS NOT NULL
  AND NOT in_list(user_info.username, 'cluster_identities')
  AND NOT anonymous_request()
  AND NOT in_list(user_info.username, 'allowed_users')
