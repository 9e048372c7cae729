-- id: k8s.pod_port_forward
-- title: Port-forward to a pod
-- severity: medium
-- description: Someone opened a port-forward tunnel to a pod through the API
--    server (kubectl port-forward). It exposes a pod port on the caller's machine
--    and bypasses network policies and ingress controls.
-- mitre: T1572
-- source: k8s_audit
-- tags: attack, command_and_control, lateral_movement
-- author: Vigil
-- references: https://attack.mitre.org/techniques/T1572/
-- based_on: falco:port-forward
SELECT
  user_info.username AS username,
  object_ref.namespace AS namespace,
  object_ref.name AS pod,
  request_uri AS uri,
  source_ips[1] AS source_ip,
  user_agent AS user_agent
FROM k8s_audit
WHERE object_ref.resource = 'pods'
  AND object_ref.subresource = 'portforward'
  AND verb IN ('create', 'get')
  AND request_succeeded()
