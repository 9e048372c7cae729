-- id: k8s.events_deleted
-- title: Kubernetes events deleted
-- severity: medium
-- description: A user or workload deleted Kubernetes Event objects. Events record
--    scheduling, pulls, restarts and failures; deleting them hides traces of
--    malicious pods. The control plane expires events on its own (TTL) without
--    delete calls; the only deletions not reported are the namespace controller
--    emptying a namespace being deleted (namespace_cleanup).
-- mitre: T1070
-- source: k8s_audit
-- tags: attack, defense_evasion
-- author: Vigil
-- references: https://attack.mitre.org/techniques/T1070/
-- based_on: sigma:kubernetes_audit_events_deleted
SELECT
  user_info.username AS username,
  verb AS verb,
  object_ref.namespace AS namespace,
  object_ref.name AS event,
  source_ips[1] AS source_ip,
  user_agent AS user_agent
FROM k8s_audit
WHERE object_ref.resource = 'events'
  AND verb IN ('delete', 'deletecollection')
  AND request_succeeded()
  AND NOT namespace_cleanup()
