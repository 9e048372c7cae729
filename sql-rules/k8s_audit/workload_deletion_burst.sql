-- id: k8s.workload_deletion_burst
-- title: Burst of pod or workload deletions in one namespace
-- severity: high
-- description: At least 10 pods or workload controllers (deployments,
--    daemonsets, statefulsets, replicasets, jobs, cronjobs) were deleted in one
--    namespace within 60 seconds (a sliding window ending at each deletion).
--    Mass deletion stops services (impact) or wipes an attacker's traces. Not
--    counted: the controllers whose work is deleting workload objects
--    (controller_cleanup: rollouts, scale-downs, evictions, the garbage
--    collector, namespace deletion) and kubelets deleting pods of their node;
--    any other identity counts, system accounts included. A stolen token of a
--    cleanup controller deletes unseen by this rule (deleting is its work);
--    k8s.system_principal_outside_cluster still sees it used from elsewhere. A
--    deletecollection request counts as one deletion.
--    Only final records of successful requests count. The
--    alert is emitted at the 10th deletion and names that event; the count and
--    first deletion time of the window are in its fields. Suppressed for 10
--    minutes per namespace, so a continuing purge gives one alert and a summary.
-- mitre: T1485, T1489, T1070
-- source: k8s_audit
-- tags: attack, impact, defense_evasion, correlation
-- author: Vigil
-- references: https://attack.mitre.org/techniques/T1485/
-- based_on: sigma:kubernetes_audit_deployment_deleted, falco:K8s Deployment Deleted
-- mode: correlation
-- window: 1m
-- suppress: 10m
-- suppress_key: namespace
SELECT
  namespace,
  deletions,
  first_deletion,
  user_info.username AS username,
  object_ref.resource AS resource,
  object_ref.name AS name,
  window_end
FROM (
  SELECT *,
    COALESCE(object_ref.namespace, '') AS namespace,
    event_time AS window_end,
    count(*) OVER (PARTITION BY COALESCE(object_ref.namespace, '') ORDER BY event_time
                   RANGE BETWEEN INTERVAL '60 seconds' PRECEDING AND CURRENT ROW) AS deletions,
    min(event_time) OVER (PARTITION BY COALESCE(object_ref.namespace, '') ORDER BY event_time
                          RANGE BETWEEN INTERVAL '60 seconds' PRECEDING AND CURRENT ROW) AS first_deletion
  FROM k8s_audit
  WHERE in_list(object_ref.resource, 'workload_resources')
    AND object_ref.subresource IS NULL
    AND verb IN ('delete', 'deletecollection')
    AND final_record()
    AND COALESCE(response_status.code, 200) < 400
    AND NOT controller_cleanup()
    AND NOT (starts_with(COALESCE(user_info.username, ''), 'system:node:') AND object_ref.resource = 'pods')
) s
WHERE deletions >= 10
