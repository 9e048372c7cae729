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
--    Written as a UNION ALL of the two tables with window functions per pod
--    over 2 minutes either side, not a join: see docs/rules.md.
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
  username,
  namespace,
  pod,
  source_ip,
  uri,
  min(event_time) AS exec_time,
  array_distinct(flatten(array_agg(runtime_events))) AS runtime_events,
  array_distinct(flatten(array_agg(binaries))) AS binaries,
  array_distinct(flatten(array_agg(arguments))) AS arguments,
  array_distinct(flatten(array_agg(files))) AS files,
  min(event_time) + INTERVAL '2 minutes' AS window_end,
  flatten(array_agg(runtime_rows)) AS __row_runtime
FROM (
  SELECT *,
    count(*) FILTER (WHERE NOT is_exec) OVER (PARTITION BY namespace, pod ORDER BY event_time
      RANGE BETWEEN INTERVAL '2 minutes' PRECEDING AND INTERVAL '2 minutes' FOLLOWING) AS runtime_count,
    array_agg(DISTINCT runtime_event) FILTER (WHERE NOT is_exec) OVER (PARTITION BY namespace, pod ORDER BY event_time
      RANGE BETWEEN INTERVAL '2 minutes' PRECEDING AND INTERVAL '2 minutes' FOLLOWING) AS runtime_events,
    array_agg(DISTINCT runtime_binary) FILTER (WHERE NOT is_exec) OVER (PARTITION BY namespace, pod ORDER BY event_time
      RANGE BETWEEN INTERVAL '2 minutes' PRECEDING AND INTERVAL '2 minutes' FOLLOWING) AS binaries,
    array_agg(DISTINCT runtime_arguments) FILTER (WHERE NOT is_exec AND runtime_arguments IS NOT NULL) OVER (PARTITION BY namespace, pod ORDER BY event_time
      RANGE BETWEEN INTERVAL '2 minutes' PRECEDING AND INTERVAL '2 minutes' FOLLOWING) AS arguments,
    array_agg(DISTINCT runtime_files) FILTER (WHERE NOT is_exec AND runtime_files IS NOT NULL) OVER (PARTITION BY namespace, pod ORDER BY event_time
      RANGE BETWEEN INTERVAL '2 minutes' PRECEDING AND INTERVAL '2 minutes' FOLLOWING) AS files,
    array_agg(__row) FILTER (WHERE NOT is_exec) OVER (PARTITION BY namespace, pod ORDER BY event_time
      RANGE BETWEEN INTERVAL '2 minutes' PRECEDING AND INTERVAL '2 minutes' FOLLOWING) AS runtime_rows
  FROM (
    SELECT __row, event_time, true AS is_exec,
      object_ref.namespace AS namespace, object_ref.name AS pod,
      user_info.username AS username, COALESCE(audit_id, '') AS audit_id,
      source_ips[1] AS source_ip, request_uri AS uri,
      CAST(NULL AS VARCHAR) AS runtime_event, CAST(NULL AS VARCHAR) AS runtime_binary,
      CAST(NULL AS VARCHAR) AS runtime_arguments, CAST(NULL AS VARCHAR) AS runtime_files
    FROM k8s_audit
    WHERE object_ref.resource = 'pods'
      AND object_ref.subresource IN ('exec', 'attach')
      AND verb IN ('create', 'get')
      AND COALESCE(stage, '') <> 'RequestReceived'
      AND COALESCE(response_status.code, 200) < 400
    UNION ALL
    SELECT __row, event_time, false AS is_exec,
      process.pod.namespace AS namespace, process.pod.name AS pod,
      CAST(NULL AS VARCHAR) AS username, CAST(NULL AS VARCHAR) AS audit_id,
      CAST(NULL AS VARCHAR) AS source_ip, CAST(NULL AS VARCHAR) AS uri,
      event_type AS runtime_event, process.binary AS runtime_binary,
      process.arguments AS runtime_arguments,
      NULLIF(array_to_string(json_path_values(args, '$[*].file_arg.path'), ','), '') AS runtime_files
    FROM tetragon
    WHERE process.pod.name IS NOT NULL
      AND (
        (event_type = 'process_exec'
         AND regexp_like(COALESCE(process.binary, ''), '/(sh|bash|ash|dash|zsh|ksh|mksh|csh|tcsh)$')
         AND COALESCE(process.pod.container.pid, 0) <> 1
         AND NOT COALESCE(json_get_bool(payload, 'process', 'pod', 'container', 'maybe_exec_probe'), false))
        OR (event_type = 'process_kprobe'
            AND (regexp_like(array_to_string(json_path_values(args, '$[*].file_arg.path'), '|'),
                   '(^|\|)/?(etc/(shadow|gshadow)|var/run/secrets/[^|]*token|run/secrets/[^|]*token|root/\.ssh/[^|]*|home/[^/|]+/\.ssh/id_[^|]*|etc/kubernetes/pki/[^|]*\.key|var/lib/kubelet/pki/[^|]*)(\||$)')
                 OR (regexp_like(lower(COALESCE(function_name, '')), 'write|truncate|rename|unlink')
                     AND regexp_like(array_to_string(json_path_values(args, '$[*].file_arg.path'), '|'),
                           '(^|\|)/?etc/(passwd|group|sudoers|sudoers\.d/[^|]*)(\||$)'))))
        OR (event_type = 'process_exec'
            AND regexp_like(COALESCE(process.arguments, ''),
                  '(/etc/shadow|/etc/gshadow|/var/run/secrets/kubernetes\.io/serviceaccount|/run/secrets/kubernetes\.io/serviceaccount|/root/\.ssh/id_)'))
      )
  ) u
) s
WHERE is_exec
  AND runtime_count > 0
-- one alert per exec request: its ResponseStarted and ResponseComplete records share the auditID
GROUP BY CASE WHEN audit_id = '' THEN CAST(__row AS VARCHAR) ELSE audit_id END,
  username, namespace, pod, source_ip, uri
