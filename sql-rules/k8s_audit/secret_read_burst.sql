-- id: k8s.secret_read_burst
-- title: One identity read 20 or more distinct secrets within 5 minutes
-- severity: high
-- description: A user or service account read (get, list or watch) at least 20
--    distinct secrets within 5 minutes (hopping windows of 5 minutes, every
--    minute). A secret is one namespace/name; a list or watch of a namespace's
--    secrets counts as one more target in that namespace. Counting distinct
--    secrets, not requests, keeps operators that re-read their own few secrets
--    on every reconcile loop quiet (e.g. the Prometheus operator in the benign
--    background data re-reads 8 secrets 428 times in 4 minutes). Denied reads
--    count too: an enumeration attempt is the signal. Every identity counts,
--    system accounts included; not counted are the reads that are legitimately
--    many: kubelets reading their pods' secrets (kubelet_pod_read: a node's
--    refused reads count) and the namespace controller emptying a deleted
--    namespace (namespace_cleanup).
--    Helm's release records (helm_release_secret) are not counted: Helm reads
--    them in every namespace it installs to. Suppressed
--    for 30 minutes per identity.
-- mitre: T1552.007, T1555
-- source: k8s_audit
-- tags: attack, credential_access, correlation
-- author: Vigil
-- references: https://kubernetes.io/docs/concepts/security/secrets-good-practices/
-- based_on: panther:Kubernetes.BulkSecretAccess, sigma:kubernetes_audit_secrets_enumeration
-- mode: correlation
-- window: 5m
-- suppress: 30m
-- suppress_key: username
SELECT
  user_info.username AS username,
  count(DISTINCT concat(COALESCE(object_ref.namespace, '*'), '/', COALESCE(object_ref.name, '*'))) AS secrets,
  count(*) AS requests,
  array_agg(DISTINCT object_ref.namespace) AS namespaces,
  array_agg(DISTINCT user_agent) AS user_agents,
  array_agg(DISTINCT source_ips[1]) AS source_ips,
  window_end
FROM (
  SELECT *, unnest(hop_ends(event_time, INTERVAL '5 minutes', INTERVAL '1 minute')) AS window_end
  FROM k8s_audit
  WHERE secret_read()
    AND user_info.username IS NOT NULL
    AND NOT kubelet_pod_read()
    AND NOT namespace_cleanup()
) s
GROUP BY user_info.username, window_end
HAVING count(DISTINCT concat(COALESCE(object_ref.namespace, '*'), '/', COALESCE(object_ref.name, '*'))) >= 20
