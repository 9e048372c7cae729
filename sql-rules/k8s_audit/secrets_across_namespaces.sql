-- id: k8s.secrets_across_namespaces
-- title: One identity touched secrets in 5 or more namespaces within 10 minutes
-- severity: high
-- description: A user or service account read secrets (get, list or watch;
--    allowed or denied) in at least 5 distinct namespaces within 10 minutes
--    (hopping windows of 10 minutes, every 2 minutes).
--    Applications and operators use the secrets of their own namespace; a walk
--    across namespaces is credential harvesting with a broad token (or a
--    cluster-wide list, which k8s.secrets_dump_all_namespaces reports on its
--    own; cluster-wide requests carry no namespace and are not counted here).
--    Every identity counts, system accounts included, except kubelets reading
--    their pods' secrets and the namespace controller emptying a deleted
--    namespace (as in k8s.secret_read_burst). Helm's release records
--    (helm_release_secret) are ignored: helm reads
--    them in every namespace it manages, and so are requests whose user agent
--    says Helm (a user agent is the client's claim: this trades a spoofable
--    exclusion for quiet Helm installs). Writes are not counted: deployers
--    (Helm, CD tools) create secrets in every namespace they install to.
--    Suppressed for 30 minutes per identity.
-- mitre: T1552.007, T1613
-- source: k8s_audit
-- tags: attack, credential_access, discovery, correlation
-- author: Vigil
-- references: https://kubernetes.io/docs/concepts/security/rbac-good-practices/#listing-secrets
-- based_on: sigma:kubernetes_audit_secrets_enumeration, falco:K8s Secret Get Successfully
-- mode: correlation
-- window: 10m
-- suppress: 30m
-- suppress_key: username
SELECT
  user_info.username AS username,
  count(DISTINCT object_ref.namespace) AS namespace_count,
  array_agg(DISTINCT object_ref.namespace) AS namespaces,
  array_agg(DISTINCT verb) AS verbs,
  count(*) AS requests,
  array_agg(DISTINCT source_ips[1]) AS source_ips,
  window_end
FROM (
  SELECT *, unnest(hop_ends(event_time, INTERVAL '10 minutes', INTERVAL '2 minutes')) AS window_end
  FROM k8s_audit
  WHERE secret_read()
    AND object_ref.namespace IS NOT NULL AND object_ref.namespace <> ''
    AND user_info.username IS NOT NULL
    AND NOT kubelet_pod_read()
    AND NOT namespace_cleanup()
    AND NOT starts_with(COALESCE(user_agent, ''), 'Helm/')
) s
GROUP BY user_info.username, window_end
HAVING count(DISTINCT object_ref.namespace) >= 5
