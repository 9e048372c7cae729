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
--    Written as a join of the exec records with the pod's Falco alerts of
--    2 minutes either side, grouped per request; window_end is the request's
--    time plus 2 minutes, so it is a delta re-scan (each request is joined
--    once, when the watermark passes it): see docs/rules.md.
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
  e.username AS username,
  e.namespace AS namespace,
  e.pod AS pod,
  e.source_ip AS source_ip,
  e.uri AS uri,
  e.event_time AS exec_time,
  array_distinct(array_agg(r.falco_rule)) AS falco_rules,
  array_distinct(array_agg(r.cmdline) FILTER (WHERE r.cmdline IS NOT NULL)) AS cmdlines,
  array_distinct(array_agg(r.file) FILTER (WHERE r.file IS NOT NULL)) AS files,
  e.event_time + INTERVAL '2 minutes' AS window_end
FROM (
  SELECT __row, event_time,
    object_ref.namespace AS namespace, object_ref.name AS pod,
    user_info.username AS username, COALESCE(audit_id, '') AS audit_id,
    source_ips[1] AS source_ip, request_uri AS uri
  FROM k8s_audit
  WHERE pod_session()
    AND request_succeeded()
) e
JOIN (
  SELECT __row, event_time,
    falco_k8s_namespace() AS namespace, falco_k8s_pod() AS pod,
    rule AS falco_rule, falco_cmdline() AS cmdline,
    json_get_str(output_fields, 'fd.name') AS file
  FROM falco
  WHERE falco_k8s_pod() IS NOT NULL
    AND (falco_shell_alert() OR falco_sensitive_file_alert())
) r
  ON r.namespace = e.namespace AND r.pod = e.pod
 AND r.event_time >= e.event_time - INTERVAL '2 minutes'
 AND r.event_time <= e.event_time + INTERVAL '2 minutes'
-- one alert per exec request: its ResponseStarted and ResponseComplete records
-- share the auditID and the request's time (requestReceivedTimestamp, the event time)
GROUP BY CASE WHEN e.audit_id = '' THEN CAST(e.__row AS VARCHAR) ELSE e.audit_id END,
  e.username, e.namespace, e.pod, e.source_ip, e.uri, e.event_time
