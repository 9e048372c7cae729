-- id: k8s.secret_read
-- title: Secret read by a user
-- severity: low
-- description: Secrets were read (get, list or watch of a namespace) by an identity
--    that does not own them: a person or cloud IAM user reading any secret, or
--    a service account reading a secret outside its own namespace (a stolen
--    token turned into database, registry and cloud credentials). Not reported:
--    service accounts reading their own namespace's secrets (own_namespace_read),
--    kubelets reading their pods' secrets (kubelet_pod_read: the Node authorizer
--    allows nothing else), the namespace controller emptying a deleted namespace
--    (namespace_cleanup), Helm's release records, and cluster-wide lists, which
--    are k8s.secrets_dump_all_namespaces' (critical). A per-identity volume
--    threshold is k8s.secret_read_burst's.
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
WHERE secret_read()
  AND COALESCE(response_status.code, 200) < 400
  AND object_ref.namespace IS NOT NULL
  AND NOT own_namespace_read()
  AND NOT kubelet_pod_read()
  AND NOT namespace_cleanup()
