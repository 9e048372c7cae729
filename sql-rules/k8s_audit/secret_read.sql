-- id: k8s.secret_read
-- title: Secret read by a user
-- severity: low
-- description: A human (or cloud IAM) user, not a system:* identity, successfully
--    read (get), listed or watched Secrets. Reading secrets is how stolen
--    credentials are turned into access to databases, registries and cloud
--    accounts, and people rarely need to. Helm's own release records
--    (sh.helm.release.v1.*, owner=helm) are ignored. Service accounts are left to
--    k8s.secrets_dump_all_namespaces; a per-user volume threshold (bulk access)
--    needs a correlation rule.
-- mitre: T1552.007
-- source: k8s_audit
-- tags: attack, credential_access
-- author: Vigil
-- references: https://kubernetes.io/docs/concepts/configuration/secret/#information-security-for-secrets
-- based_on: falco:K8s Secret Get Successfully, sigma:kubernetes_audit_secrets_enumeration
SELECT
  user_info.username AS username,
  verb AS verb,
  object_ref.namespace AS namespace,
  object_ref.name AS secret,
  request_uri AS uri,
  source_ips[1] AS source_ip,
  user_agent AS user_agent
FROM k8s_audit
WHERE object_ref.resource = 'secrets'
  AND verb IN ('get', 'list', 'watch')
  AND COALESCE(stage, '') NOT IN ('RequestReceived', 'ResponseStarted')
  AND COALESCE(response_status.code, 200) < 400
  AND NOT regexp_like(COALESCE(user_info.username, ''), '^(system:|eks:|aks:|aksService$)')
  AND NOT starts_with(COALESCE(object_ref.name, ''), 'sh.helm.release.v1.')
  AND NOT regexp_like(COALESCE(request_uri, ''), 'labelSelector=[^&]*owner%3Dhelm')
