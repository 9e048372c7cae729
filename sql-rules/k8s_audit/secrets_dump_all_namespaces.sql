-- id: k8s.secrets_dump_all_namespaces
-- title: Secrets listed across all namespaces
-- severity: critical
-- description: A user or workload listed Secrets cluster-wide (LIST /api/v1/secrets,
--    no namespace) and the request succeeded: one call returned every secret in
--    the cluster. Control-plane components are ignored, and so are the informer
--    start-up lists (resourceVersion=0) of operators running as service accounts
--    (cert-manager, kube-state-metrics, ingress controllers).
-- mitre: T1552.007, T1530
-- source: k8s_audit
-- tags: attack, credential_access, collection
-- author: Vigil
-- references: https://stratus-red-team.cloud/attack-techniques/kubernetes/k8s.credential-access.dump-secrets/
-- based_on: panther:Kubernetes.Secrets.DumpAllNamespaces, sigma:kubernetes_audit_secrets_enumeration
SELECT
  user_info.username AS username,
  verb AS verb,
  request_uri AS uri,
  source_ips[1] AS source_ip,
  user_agent AS user_agent,
  response_status.code AS code
FROM k8s_audit
WHERE object_ref.resource = 'secrets'
  AND verb IN ('list', 'watch')
  AND COALESCE(object_ref.namespace, '') = ''
  AND (request_uri IS NULL OR regexp_like(request_uri, '^/api/v1/secrets([?].*)?$'))
  AND COALESCE(stage, '') NOT IN ('RequestReceived', 'ResponseStarted')
  AND COALESCE(response_status.code, 200) < 400
  AND NOT regexp_like(COALESCE(user_info.username, ''), '^(system:(node:|kube-|apiserver$|serviceaccount:kube-system:)|eks:|aks:|aksService$)')
  AND NOT (starts_with(COALESCE(user_info.username, ''), 'system:serviceaccount:')
           AND regexp_like(COALESCE(request_uri, ''), '[?&]resourceVersion=0(&|$)'))
