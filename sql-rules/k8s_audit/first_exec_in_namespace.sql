-- id: k8s.first_exec_in_namespace
-- title: First exec into a namespace's pods by this identity in 14 days
-- severity: medium
-- description: An identity opened a session in a container (kubectl exec or attach)
--    in a namespace where it had opened none in the last 14 days. Operators
--    who debug their own namespaces every week, and automation that execs on a
--    schedule, are seen again and stay quiet, whoever they are; a stolen token
--    or a compromised CI identity reaching into a namespace it never touched
--    is reported, system accounts included. Learns for 14 days of event time
--    before it alerts (state is kept in the state topic across restarts).
-- mitre: T1609
-- source: k8s_audit
-- tags: attack, execution, lateral_movement, first_seen
-- author: Vigil
-- references: https://attack.mitre.org/techniques/T1609/, https://www.elastic.co/guide/en/security/current/rules-ui-create.html#create-new-terms-rule
-- based_on: vigil:first_seen
-- first_seen: username, namespace
-- history: 14d
SELECT
  user_info.username AS username,
  object_ref.namespace AS namespace,
  object_ref.name AS pod,
  exec_command() AS command,
  source_ips[1] AS source_ip,
  user_agent AS user_agent
FROM k8s_audit
WHERE pod_session()
  AND request_succeeded()
