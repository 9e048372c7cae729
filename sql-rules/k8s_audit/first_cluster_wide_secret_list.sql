-- id: k8s.first_cluster_wide_secret_list
-- title: First cluster-wide read of Secrets by this identity in 14 days
-- severity: high
-- description: An identity listed or watched Secrets across all namespaces, and had
--    not done so in the last 14 days. Informers of controllers that always
--    read every secret (cert-manager, ingress controllers) are seen again at
--    each start or resync and stay quiet; a controller's identity that starts
--    reading every secret, which is what a compromised controller or a stolen
--    token does even when it mimics an informer's request, is reported.
--    Complements k8s.secrets_dump_all_namespaces, which leaves informers out.
--    Learns for 14 days of event time before it alerts.
-- mitre: T1552.007
-- source: k8s_audit
-- tags: attack, credential_access, first_seen
-- author: Vigil
-- references: https://stratus-red-team.cloud/attack-techniques/kubernetes/k8s.credential-access.dump-secrets/
-- based_on: vigil:first_seen
-- first_seen: username
-- history: 14d
SELECT
  user_info.username AS username,
  verb AS verb,
  request_uri AS uri,
  source_ips[1] AS source_ip,
  user_agent AS user_agent
FROM k8s_audit
WHERE secret_read()
  AND verb IN ('list', 'watch')
  AND COALESCE(object_ref.namespace, '') = ''
  AND request_succeeded()
