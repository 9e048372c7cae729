-- id: tetragon.suspicious_outbound_connection
-- title: Outbound connection by a shell, netcat-like tool or temp-dir binary
-- severity: high
-- description: A container process opened a connection (process_connect, or a
--    tcp_connect, __sys_connect or security_socket_connect kprobe) to a
--    non-loopback address, and the process is one that
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
  tetragon_destination_ip() AS destination_ip,
  tetragon_destination_port() AS destination_port
FROM tetragon
WHERE tetragon_connect_event()
  AND process_in_container()
  AND NOT tetragon_destination_is_loopback()
  AND (
    process_is_shell()
    OR in_list(process_basename(process.binary), 'netcat_binaries')
    OR in_list(process_basename(process.binary), 'ssh_client_binaries')
    OR process_path_in_temp_dir(process.binary)
  )
