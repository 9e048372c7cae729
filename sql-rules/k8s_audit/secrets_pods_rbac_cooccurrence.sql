-- id: k8s.secrets_pods_rbac_cooccurrence
-- title: One user listed secrets, created a pod and bound a role within 10 minutes
-- severity: high
-- description: Within 10 minutes (hopping windows of 10 minutes, every 2
--    minutes), one identity did all three, in any order: listed secrets,
--    created a pod, and created a RoleBinding or ClusterRoleBinding (all
--    successful). Each is common on its own; together they are the outline of
--    an intrusion: harvest credentials, run a workload, persist or escalate
--    access. Every identity counts, system accounts included, except for the
--    pods workload controllers create (controller_creating_its_kind: they list
--    no secrets and bind no roles) and Helm's release lists
--    (helm_release_secret): Helm creates bindings and lists its releases on every
--    install, but it creates workloads through controllers, not bare pods.
--    Suppressed for 30 minutes per identity (overlapping windows give one alert).
-- mitre: T1552.007, T1610, T1098
-- source: k8s_audit
-- tags: attack, credential_access, execution, persistence, correlation
-- author: Vigil
-- references: https://microsoft.github.io/Threat-Matrix-for-Kubernetes/
-- based_on: sigma:kubernetes_audit_secrets_enumeration, sigma:kubernetes_audit_rolebinding_modification, falco:K8s RoleBinding Created, falco:Create Disallowed Pod
-- mode: correlation
-- window: 10m
-- suppress: 30m
-- suppress_key: username
SELECT
  user_info.username AS username,
  array_agg(DISTINCT concat(verb, ' ', object_ref.resource, ' ', COALESCE(object_ref.namespace, '*'), '/', COALESCE(object_name(), '*'))) AS actions,
  min(event_time) AS first_seen,
  max(event_time) AS last_seen,
  window_end
FROM (
  SELECT *, unnest(hop_ends(event_time, INTERVAL '10 minutes', INTERVAL '2 minutes')) AS window_end
  FROM k8s_audit
  WHERE final_record()
    AND COALESCE(response_status.code, 200) < 400
    AND user_info.username IS NOT NULL
    AND object_ref.subresource IS NULL
    AND ((secret_read() AND verb = 'list')
         OR (object_ref.resource = 'pods' AND verb = 'create' AND NOT controller_creating_its_kind())
         OR (object_ref.resource IN ('rolebindings', 'clusterrolebindings') AND verb = 'create'))
) s
GROUP BY user_info.username, window_end
HAVING bool_or(object_ref.resource = 'secrets')
   AND bool_or(object_ref.resource = 'pods')
   AND bool_or(object_ref.resource IN ('rolebindings', 'clusterrolebindings'))
