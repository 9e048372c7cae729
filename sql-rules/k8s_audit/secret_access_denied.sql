-- id: k8s.secret_access_denied
-- title: Secret read denied
-- severity: medium
-- description: A user or workload tried to get a Secret and was refused (401, 403) or
--    asked for one that does not exist (404). Occasional failures are RBAC
--    mistakes; bursts are secret guessing or enumeration with a stolen token.
--    Reported whoever asks, system accounts included, except "get or create"
--    lookups that end in 404: a service account looking for a secret in its own
--    namespace (own_namespace_read), or Helm checking before it installs.
-- mitre: T1552.007, T1613
-- source: k8s_audit
-- tags: attack, credential_access, discovery
-- author: Vigil
-- references: https://kubernetes.io/docs/concepts/configuration/secret/
-- based_on: panther:Kubernetes.Secret.AccessDenied, falco:K8s Secret Get Unsuccessfully Tried
SELECT
  user_info.username AS username,
  object_ref.namespace AS namespace,
  object_ref.name AS secret,
  response_status.code AS code,
  response_status.reason AS reason,
  source_ips[1] AS source_ip,
  user_agent AS user_agent
FROM k8s_audit
WHERE object_ref.resource = 'secrets'
  AND verb = 'get'
  AND response_status.code IN (401, 403, 404)
  AND NOT (response_status.code = 404
           AND (own_namespace_read()
                OR starts_with(COALESCE(user_agent, ''), 'Helm/')))
