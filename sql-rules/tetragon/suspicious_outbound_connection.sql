-- id: tetragon.suspicious_outbound_connection
-- title: Outbound connection by a shell, netcat-like tool or temp-dir binary
-- severity: high
-- description: A container process opened a TCP connection (process_connect, or
--    a tcp_connect kprobe) to a non-loopback address, and the process is one that
--    should not talk to the network: a shell (reverse shell), nc / ncat / socat /
--    telnet, an interpreter one-liner's shell, ssh / scp / sftp (exfiltration or
--    tunnels), or a binary running from /tmp, /var/tmp or /dev/shm (C2 implant).
-- mitre: T1059.004, T1071, T1048, T1572
-- source: tetragon
-- tags: attack, command_and_control, exfiltration, runtime
-- author: Vigil
-- references: https://tetragon.io/docs/concepts/events/#network-observability
-- based_on: falco:Redirect STDOUT/STDIN to Network Connection in Container, falco:Netcat Remote Code Execution in Container, falco:Disallowed SSH Connection Non Standard Port
SELECT
  node_name AS node,
  event_type AS event_type,
  process.pod.namespace AS namespace,
  process.pod.name AS pod,
  process.binary AS binary,
  process.arguments AS arguments,
  parent.binary AS parent_binary,
  COALESCE(destination_ip, json_path_values(args, '$[*].sock_arg.daddr')[1]) AS destination_ip,
  COALESCE(CAST(destination_port AS BIGINT), json_get_int(args, 0, 'sock_arg', 'dport')) AS destination_port
FROM tetragon
WHERE (event_type = 'process_connect'
       OR (event_type = 'process_kprobe' AND function_name IN ('tcp_connect', '__sys_connect', 'security_socket_connect')))
  AND (process.pod.name IS NOT NULL OR COALESCE(process.docker, '') <> '')
  AND NOT regexp_like(COALESCE(destination_ip, json_path_values(args, '$[*].sock_arg.daddr')[1], ''), '^(127\.|::1$|localhost)')
  AND (
    regexp_like(COALESCE(process.binary, ''),
      '/(sh|bash|ash|dash|zsh|ksh|nc|ncat|netcat|nc\.traditional|nc\.openbsd|socat|telnet|ssh|scp|sftp)$')
    OR regexp_like(COALESCE(process.binary, ''), '^/(tmp|var/tmp|dev/shm|run/shm)/')
  )
