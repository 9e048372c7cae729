-- id: k8s.impersonation
-- title: User impersonation
-- severity: medium
-- description: A request was made on behalf of another identity (kubectl --as /
--    --as-group, Impersonate-* headers), or someone used the impersonate verb
--    directly. Impersonation rights are equivalent to holding every impersonable
--    identity, and requests made this way are attributed to the impersonated user.
--    Successful requests only; a denied impersonation attempt is also reported.
-- mitre: T1078, T1134.001
-- source: k8s_audit
-- tags: attack, privilege_escalation, defense_evasion
-- author: Vigil
-- references: https://kubernetes.io/docs/reference/access-authn-authz/authentication/#user-impersonation
-- based_on: vigil:impersonation, mitre:T1134.001
SELECT
  user_info.username AS username,
  impersonated_user.username AS impersonated_user,
  impersonated_user.groups AS impersonated_groups,
  verb AS verb,
  object_ref.resource AS resource,
  object_ref.namespace AS namespace,
  object_ref.name AS name,
  response_status.code AS code,
  source_ips[1] AS source_ip
FROM k8s_audit
WHERE final_record()
  AND (impersonated_user.username IS NOT NULL
       OR cardinality(impersonated_user.groups) > 0
       OR verb = 'impersonate')
