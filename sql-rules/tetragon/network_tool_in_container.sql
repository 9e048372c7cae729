-- id: tetragon.network_tool_in_container
-- title: Network tool executed in a container
-- severity: medium
-- description: A network utility that attackers use for reverse shells, payload
--    download, scanning or sniffing (nc, ncat, netcat, socat, nmap, masscan,
--    zmap, telnet, tcpdump, tshark, curl, wget, ...) was executed inside a
--    container. Kubelet exec probes and container entrypoints (PID 1,
--    executed as the container started) are ignored.
-- mitre: T1105, T1046, T1059
-- source: tetragon
-- tags: attack, command_and_control, discovery, runtime
-- author: Vigil
-- references: https://tetragon.io/docs/concepts/events/#process_exec
-- based_on: falco:Netcat Remote Code Execution in Container, falco:Redirect STDOUT/STDIN to Network Connection in Container, mitre:T1105
SELECT
  node_name AS node,
  process.pod.namespace AS namespace,
  process.pod.name AS pod,
  process.pod.container.image.name AS image,
  process.binary AS binary,
  process.arguments AS arguments,
  parent.binary AS parent_binary,
  process.uid AS uid
FROM tetragon
WHERE event_type = 'process_exec'
  AND process_in_container()
  AND (in_list(process_basename(process.binary), 'netcat_binaries')
       OR in_list(process_basename(process.binary), 'network_tool_binaries'))
  AND NOT process_is_entrypoint()
  AND NOT process_is_exec_probe()
