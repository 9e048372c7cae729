-- id: k8s.exec_then_secret_read
-- title: Exec into a pod followed by a secret read by the same user
-- severity: high
-- description: A user opened an exec or attach session in a pod and, within
--    the next 10 minutes, read (get, list or watch) a secret with the same
--    identity. Getting a shell in a workload and then collecting credentials
--    through the API is a common post-exploitation path; either step alone is
--    routine for administrators, the sequence is rarer. The exec and the read
--    must both have succeeded; the read must come strictly after the exec.
--    Helm's release records (sh.helm.release.v1.*, owner=helm lists) are not
--    counted as secret reads. One alert per secret read, emitted at the read,
--    naming the read and every exec record of that user in the 10 minutes
--    before it; suppressed for 10 minutes per user. Written as a join of the
--    secret reads with the same user's exec records of the 10 minutes before
--    (a delta re-scan: only new reads are joined at each evaluation; see
--    "How correlation rules are evaluated" in docs/rules.md).
-- mitre: T1609, T1552.007
-- source: k8s_audit
-- tags: attack, execution, credential_access, correlation
-- author: Vigil
-- references: https://kubernetes.io/docs/tasks/debug/debug-application/get-shell-running-container/
-- based_on: sigma:kubernetes_audit_exec_into_container, sigma:kubernetes_audit_secrets_enumeration, falco:Attach/Exec Pod, falco:K8s Secret Get Successfully
-- mode: correlation
-- window: 10m
-- suppress: 10m
-- suppress_key: username
SELECT
  r.username AS username,
  array_distinct(array_agg(x.pod)) AS exec_pods,
  min(x.event_time) AS exec_time,
  r.verb AS secret_verb,
  r.namespace AS secret_namespace,
  r.secret AS secret,
  r.source_ip AS source_ip,
  r.event_time AS window_end
FROM (
  SELECT __row, event_time, user_info.username AS username, verb,
    object_ref.namespace AS namespace, object_ref.name AS secret, source_ips[1] AS source_ip
  FROM k8s_audit
  WHERE secret_read()
    AND user_info.username IS NOT NULL
    AND COALESCE(response_status.code, 200) < 400
) r
JOIN (
  SELECT __row, event_time, user_info.username AS username,
    concat(object_ref.namespace, '/', object_ref.name) AS pod
  FROM k8s_audit
  WHERE pod_session()
    AND request_succeeded()
    AND user_info.username IS NOT NULL
) x
  ON x.username = r.username
 AND x.event_time <= r.event_time
 AND x.event_time >= r.event_time - INTERVAL '10 minutes'
GROUP BY r.__row, r.username, r.verb, r.namespace, r.secret, r.source_ip, r.event_time
HAVING min(x.event_time) < r.event_time
