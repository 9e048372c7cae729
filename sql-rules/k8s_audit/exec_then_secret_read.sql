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
--    before it; suppressed for 10 minutes per user. Written with window
--    functions (per user, over the preceding 10 minutes), not a self-join:
--    see "Correlation rules" in docs/rules.md.
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
  user_info.username AS username,
  exec_pods,
  first_exec AS exec_time,
  verb AS secret_verb,
  object_ref.namespace AS secret_namespace,
  object_ref.name AS secret,
  source_ips[1] AS source_ip,
  event_time AS window_end,
  exec_rows AS __row_exec
FROM (
  SELECT *,
    min(event_time) FILTER (WHERE is_exec) OVER (PARTITION BY user_info.username ORDER BY event_time
      RANGE BETWEEN INTERVAL '10 minutes' PRECEDING AND CURRENT ROW) AS first_exec,
    array_agg(DISTINCT concat(object_ref.namespace, '/', object_ref.name)) FILTER (WHERE is_exec) OVER (PARTITION BY user_info.username ORDER BY event_time
      RANGE BETWEEN INTERVAL '10 minutes' PRECEDING AND CURRENT ROW) AS exec_pods,
    array_agg(__row) FILTER (WHERE is_exec) OVER (PARTITION BY user_info.username ORDER BY event_time
      RANGE BETWEEN INTERVAL '10 minutes' PRECEDING AND CURRENT ROW) AS exec_rows
  FROM (
    SELECT *, object_ref.resource = 'pods' AS is_exec
    FROM k8s_audit
    WHERE user_info.username IS NOT NULL
      AND COALESCE(response_status.code, 200) < 400
      AND ((object_ref.resource = 'pods'
            AND object_ref.subresource IN ('exec', 'attach')
            AND verb IN ('create', 'get')
            AND COALESCE(stage, '') <> 'RequestReceived')
        OR (object_ref.resource = 'secrets'
            AND verb IN ('get', 'list', 'watch')
            AND COALESCE(stage, '') NOT IN ('RequestReceived', 'ResponseStarted')
            AND NOT starts_with(COALESCE(object_ref.name, ''), 'sh.helm.release.v1.')
            AND NOT regexp_like(COALESCE(request_uri, ''), 'labelSelector=[^&]*owner%3Dhelm')))
  ) e
) s
WHERE NOT is_exec
  AND first_exec < event_time
