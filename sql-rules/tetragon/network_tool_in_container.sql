-- id: tetragon.network_tool_in_container
-- title: Network tool executed in a container
-- severity: medium
-- description: A network utility that attackers use for reverse shells, payload
--    download, scanning or sniffing (nc, ncat, netcat, socat, nmap, masscan,
--    zmap, telnet, tcpdump, tshark, curl, wget, ...) was executed inside a
--    container. Kubelet exec probes and container entrypoints are ignored.
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
  AND (process.pod.name IS NOT NULL OR COALESCE(process.docker, '') <> '')
  AND regexp_like(COALESCE(process.binary, ''),
    '/(nc|ncat|netcat|nc\.traditional|nc\.openbsd|socat|nmap|masscan|zmap|rustscan|hping3|nping|telnet|tcpdump|tshark|ngrok|chisel|curl|wget)$')
  AND COALESCE(process.pod.container.pid, 0) <> 1
  AND NOT COALESCE(json_get_bool(payload, 'process', 'pod', 'container', 'maybe_exec_probe'), false)
