-- id: k8s.exec_with_tetragon_activity
-- title: Exec into a pod with a shell or credential-file access seen by Tetragon
-- severity: high
-- description: A user's exec or attach session in a pod (Kubernetes audit) is
--    matched with what Tetragon saw in that same pod (namespace and name)
--    within 2 minutes before or after the request: a shell started (not the
--    container's entrypoint, not a kubelet exec probe), or a credential file
--    read or written (/etc/shadow, service-account tokens, SSH keys, Kubernetes
--    PKI keys; writes to /etc/passwd, /etc/group, /etc/sudoers), or a process
--    started with such a file on its command line. The audit event says who;
--    the runtime events say what was done. One alert per exec request
--    (auditID), listing every matching runtime event, emitted 2 minutes after
--    the request (when no more matches can arrive); suppressed for 10 minutes
--    per user and pod. Cross-source rule: its header source is k8s_audit (the
--    exec is the trigger), and it reads the tetragon table too.
--    Written as a join of the exec records with the pod's Tetragon events of
--    2 minutes either side, grouped per request; window_end is the request's
--    time plus 2 minutes, so it is a delta re-scan (each request is joined
--    once, when the watermark passes it): see docs/rules.md.
-- mitre: T1609, T1059.004, T1552.001
-- source: k8s_audit
-- tags: attack, execution, credential_access, runtime, correlation, cross_source
-- author: Vigil
-- references: https://tetragon.io/docs/use-cases/filename-access/
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
  array_distinct(array_agg(r.runtime_event)) AS runtime_events,
  array_distinct(array_agg(r.runtime_binary)) AS binaries,
  array_distinct(array_agg(r.runtime_arguments) FILTER (WHERE r.runtime_arguments IS NOT NULL)) AS arguments,
  array_distinct(array_agg(r.runtime_files) FILTER (WHERE r.runtime_files IS NOT NULL)) AS files,
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
    process.pod.namespace AS namespace, process.pod.name AS pod,
    event_type AS runtime_event, process.binary AS runtime_binary,
    process.arguments AS runtime_arguments,
    NULLIF(array_to_string(tetragon_file_args(), ','), '') AS runtime_files
  FROM tetragon
  WHERE process_in_pod()
    AND (tetragon_shell_exec() OR tetragon_credential_file_access())
) r
  ON r.namespace = e.namespace AND r.pod = e.pod
 AND r.event_time >= e.event_time - INTERVAL '2 minutes'
 AND r.event_time <= e.event_time + INTERVAL '2 minutes'
-- one alert per exec request: its ResponseStarted and ResponseComplete records
-- share the auditID and the request's time (requestReceivedTimestamp, the event time)
GROUP BY CASE WHEN e.audit_id = '' THEN CAST(e.__row AS VARCHAR) ELSE e.audit_id END,
  e.username, e.namespace, e.pod, e.source_ip, e.uri, e.event_time
