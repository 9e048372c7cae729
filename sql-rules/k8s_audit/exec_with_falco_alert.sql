-- id: k8s.exec_with_falco_alert
-- title: Exec into a pod with a Falco shell or sensitive-file alert in that pod
-- severity: high
-- description: A user's exec or attach session in a pod (Kubernetes audit) is
--    matched with a Falco alert from that same pod (k8s.ns.name and
--    k8s.pod.name) within 2 minutes before or after the request, where the
--    Falco alert reports a shell (Terminal shell in container, Run shell
--    untrusted, netcat or STDIN/STDOUT redirection, or tags container+shell /
--    T1059) or a sensitive file read (Read sensitive file untrusted / trusted
--    after startup, Search Private Keys or Passwords, or tag T1555 / T1552).
--    The audit event says who; Falco says what happened inside. One alert per
--    exec request (auditID), listing every matching Falco alert, emitted 2
--    minutes after the request; suppressed for 10 minutes per user and pod.
--    Cross-source rule: its header source is k8s_audit (the exec is the
--    trigger), and it reads the falco table too.
--    Written as a UNION ALL of the two tables with window functions per pod
--    over 2 minutes either side, not a join: see docs/rules.md.
-- mitre: T1609, T1059.004, T1552.001
-- source: k8s_audit
-- tags: attack, execution, credential_access, runtime, correlation, cross_source
-- author: Vigil
-- references: https://falco.org/docs/reference/rules/default-rules/
-- based_on: falco:Attach/Exec Pod, falco:Terminal shell in container, falco:Read sensitive file untrusted, sigma:kubernetes_audit_exec_into_container
-- mode: correlation
-- window: 5m
-- suppress: 10m
-- suppress_key: username, namespace, pod
SELECT
  username,
  namespace,
  pod,
  source_ip,
  uri,
  min(event_time) AS exec_time,
  array_distinct(flatten(array_agg(falco_rules))) AS falco_rules,
  array_distinct(flatten(array_agg(cmdlines))) AS cmdlines,
  array_distinct(flatten(array_agg(files))) AS files,
  min(event_time) + INTERVAL '2 minutes' AS window_end,
  flatten(array_agg(runtime_rows)) AS __row_runtime
FROM (
  SELECT *,
    count(*) FILTER (WHERE NOT is_exec) OVER (PARTITION BY namespace, pod ORDER BY event_time
      RANGE BETWEEN INTERVAL '2 minutes' PRECEDING AND INTERVAL '2 minutes' FOLLOWING) AS runtime_count,
    array_agg(DISTINCT falco_rule) FILTER (WHERE NOT is_exec) OVER (PARTITION BY namespace, pod ORDER BY event_time
      RANGE BETWEEN INTERVAL '2 minutes' PRECEDING AND INTERVAL '2 minutes' FOLLOWING) AS falco_rules,
    array_agg(DISTINCT cmdline) FILTER (WHERE NOT is_exec AND cmdline IS NOT NULL) OVER (PARTITION BY namespace, pod ORDER BY event_time
      RANGE BETWEEN INTERVAL '2 minutes' PRECEDING AND INTERVAL '2 minutes' FOLLOWING) AS cmdlines,
    array_agg(DISTINCT file) FILTER (WHERE NOT is_exec AND file IS NOT NULL) OVER (PARTITION BY namespace, pod ORDER BY event_time
      RANGE BETWEEN INTERVAL '2 minutes' PRECEDING AND INTERVAL '2 minutes' FOLLOWING) AS files,
    array_agg(__row) FILTER (WHERE NOT is_exec) OVER (PARTITION BY namespace, pod ORDER BY event_time
      RANGE BETWEEN INTERVAL '2 minutes' PRECEDING AND INTERVAL '2 minutes' FOLLOWING) AS runtime_rows
  FROM (
    SELECT __row, event_time, true AS is_exec,
      object_ref.namespace AS namespace, object_ref.name AS pod,
      user_info.username AS username, COALESCE(audit_id, '') AS audit_id,
      source_ips[1] AS source_ip, request_uri AS uri,
      CAST(NULL AS VARCHAR) AS falco_rule, CAST(NULL AS VARCHAR) AS cmdline, CAST(NULL AS VARCHAR) AS file
    FROM k8s_audit
    WHERE object_ref.resource = 'pods'
      AND object_ref.subresource IN ('exec', 'attach')
      AND verb IN ('create', 'get')
      AND COALESCE(stage, '') <> 'RequestReceived'
      AND COALESCE(response_status.code, 200) < 400
    UNION ALL
    SELECT __row, event_time, false AS is_exec,
      json_get_str(output_fields, 'k8s.ns.name') AS namespace, json_get_str(output_fields, 'k8s.pod.name') AS pod,
      CAST(NULL AS VARCHAR) AS username, CAST(NULL AS VARCHAR) AS audit_id,
      CAST(NULL AS VARCHAR) AS source_ip, CAST(NULL AS VARCHAR) AS uri,
      rule AS falco_rule, json_get_str(output_fields, 'proc.cmdline') AS cmdline,
      json_get_str(output_fields, 'fd.name') AS file
    FROM falco
    WHERE json_get_str(output_fields, 'k8s.pod.name') IS NOT NULL
      AND (rule IN ('Terminal shell in container', 'Run shell untrusted',
                    'Redirect STDOUT/STDIN to Network Connection in Container',
                    'Netcat Remote Code Execution in Container',
                    'Read sensitive file untrusted', 'Read sensitive file trusted after startup',
                    'Search Private Keys or Passwords')
           OR (array_has(tags, 'container')
               AND (array_has(tags, 'shell') OR array_has(tags, 'T1059') OR array_has(tags, 'T1059.004')))
           OR array_has(tags, 'T1555') OR array_has(tags, 'T1552'))
  ) u
) s
WHERE is_exec
  AND runtime_count > 0
-- one alert per exec request: its ResponseStarted and ResponseComplete records share the auditID
GROUP BY CASE WHEN audit_id = '' THEN CAST(__row AS VARCHAR) ELSE audit_id END,
  username, namespace, pod, source_ip, uri
