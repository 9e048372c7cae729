-- id: k8s.node_credential_non_kubelet_client
-- title: Node credential used by a program other than the kubelet
-- severity: high
-- description: A request authenticated as a node (system:node:<name>) came
--    from a client whose user agent is not one of the node_client_user_agents
--    (the kubelet, and node agents some distributions run with its
--    credential): kubectl, curl, a Python client. A node's credential sits in
--    the kubelet's kubeconfig and certificates on the node; an attacker who
--    escapes a container reads it and uses it with their own tools to list
--    pods, read the secrets of the node's pods or create mirror pods. Requests
--    without a user agent are not judged; denied requests are reported too
--    (probing with the credential is the signal). The user agent is the
--    client's to choose, so k8s.node_credential_multiple_addresses watches the
--    addresses as well.
-- mitre: T1552.001, T1078.004, T1550.001
-- source: k8s_audit
-- tags: attack, credential_access, lateral_movement, stolen_credentials
-- author: Vigil
-- references: https://kubernetes.io/docs/reference/access-authn-authz/node/
-- based_on: vigil:node_credential_non_kubelet_client, mitre:T1552.001
SELECT
  user_info.username AS username,
  user_agent AS user_agent,
  verb AS verb,
  object_ref.resource AS resource,
  object_ref.namespace AS namespace,
  object_ref.name AS name,
  response_status.code AS code,
  source_ips[1] AS source_ip
FROM k8s_audit
WHERE starts_with(user_info.username, 'system:node:')
  AND final_record()
  AND user_agent IS NOT NULL
  AND NOT in_list(user_agent, 'node_client_user_agents')
