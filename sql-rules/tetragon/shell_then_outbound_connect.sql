-- id: tetragon.shell_then_outbound_connect
-- title: Shell in a pod followed by an outbound connection from it
-- severity: high
-- description: A shell (sh, bash, ash, dash, zsh, ksh, mksh, csh, tcsh) started
--    in a Kubernetes pod, and within the next minute the shell itself or a
--    process it started opened an outbound TCP connection (a tcp_connect
--    kprobe from a Tetragon TracingPolicy, or a process_connect event) to a
--    non-loopback address. This is a reverse shell, or a shell fetching a tool
--    or payload (curl | sh, wget, nc). The connection is tied to the shell by
--    process lineage (same exec_id, or the shell's exec_id as parent_exec_id),
--    not only by pod, so the application's own traffic in that pod does not
--    match; deeper descendants (shell -> python -> socket) are not matched.
--    The container's entrypoint (PID 1, executed as the container started)
--    and kubelet exec probes are not counted as shells. One alert per connection, emitted at
--    the connection, naming it and the shell's exec event; suppressed for 10
--    minutes per pod. Written with window functions over each process
--    lineage (a connection is filed under its own exec_id and its parent's),
--    not a self-join: see docs/rules.md.
-- mitre: T1059.004, T1071, T1105
-- source: tetragon
-- tags: attack, execution, command_and_control, runtime, correlation
-- author: Vigil
-- references: https://tetragon.io/docs/use-cases/network-observability/, https://tetragon.io/docs/concepts/events/#process_exec
-- based_on: falco:Redirect STDOUT/STDIN to Network Connection in Container, falco:Terminal shell in container, falco:Netcat Remote Code Execution in Container
-- mode: correlation
-- window: 1m
-- suppress: 10m
-- suppress_key: namespace, pod
SELECT
  namespace,
  pod,
  node_name AS node,
  shells,
  shell_time,
  event_type AS connect_event,
  process.binary AS binary,
  process.arguments AS arguments,
  tetragon_destination_ip() AS destination_ip,
  tetragon_destination_port() AS destination_port,
  event_time AS window_end,
  shell_rows AS __row_shell
FROM (
  SELECT *,
    min(event_time) FILTER (WHERE is_shell) OVER (PARTITION BY namespace, pod, lineage ORDER BY event_time
      RANGE BETWEEN INTERVAL '1 minute' PRECEDING AND CURRENT ROW) AS shell_time,
    array_agg(DISTINCT concat(process.binary, ' ', COALESCE(process.arguments, ''))) FILTER (WHERE is_shell)
      OVER (PARTITION BY namespace, pod, lineage ORDER BY event_time
            RANGE BETWEEN INTERVAL '1 minute' PRECEDING AND CURRENT ROW) AS shells,
    array_agg(__row) FILTER (WHERE is_shell) OVER (PARTITION BY namespace, pod, lineage ORDER BY event_time
      RANGE BETWEEN INTERVAL '1 minute' PRECEDING AND CURRENT ROW) AS shell_rows
  FROM (
    -- A shell is filed under its own exec_id; a connection under its own
    -- exec_id (the shell connects) and under its parent's (a child connects).
    SELECT *,
      process.pod.namespace AS namespace,
      process.pod.name AS pod,
      event_type = 'process_exec' AS is_shell,
      unnest(CASE WHEN event_type = 'process_exec' THEN make_array(process.exec_id)
                  ELSE make_array(process.exec_id, process.parent_exec_id) END) AS lineage
    FROM tetragon
    WHERE process_in_pod()
      AND (tetragon_shell_exec()
        OR (tetragon_tcp_connect_event() AND NOT tetragon_destination_is_loopback()))
  ) e
) s
WHERE NOT is_shell
  AND lineage IS NOT NULL
  AND shell_time IS NOT NULL
