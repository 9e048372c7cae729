-- id: k8s.secrets_dump_all_namespaces
-- title: Secrets listed across all namespaces
-- severity: critical
-- description: A user or workload listed Secrets cluster-wide (LIST /api/v1/secrets,
--    no namespace) and the request succeeded: one call returned every secret in
--    the cluster. Reported whoever asks, system accounts included, except
--    informers (informer_list: a cluster identity listing with
--    resourceVersion=0, as client-go does at start and kubectl never does, or
--    watching, from inside the cluster's networks; cert-manager,
--    kube-state-metrics, ingress controllers, the controller manager). A stolen
--    token used from outside, or a plain kubectl get secrets -A, is reported;
--    helm list -A (a list selecting owner=helm) is not.
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
WHERE secret_read()
  AND verb IN ('list', 'watch')
  AND COALESCE(object_ref.namespace, '') = ''
  AND (request_uri IS NULL OR regexp_like(request_uri, '^/api/v1/secrets([?].*)?$'))
  AND COALESCE(response_status.code, 200) < 400
  AND NOT informer_list()
