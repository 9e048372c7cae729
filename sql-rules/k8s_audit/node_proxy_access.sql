-- id: k8s.node_proxy_access
-- title: Kubelet API reached through nodes/proxy
-- severity: high
-- description: A user or workload called a node's kubelet API through the API
--    server (nodes/proxy subresource) and the request succeeded. Through it one
--    can list pods and run commands in any container of the node (/run, /exec)
--    without pods/exec audit records or admission control. Monitoring scrapes
--    of /metrics, /stats/summary and /healthz are ignored; anything else is
--    reported whoever asks, system accounts included.
-- mitre: T1609, T1613
-- source: k8s_audit
-- tags: attack, execution, discovery
-- author: Vigil
-- references: https://kubernetes.io/docs/reference/access-authn-authz/kubelet-authn-authz/
-- based_on: vigil:node_proxy_access
SELECT
  user_info.username AS username,
  verb AS verb,
  object_ref.name AS node,
  request_uri AS uri,
  source_ips[1] AS source_ip,
  user_agent AS user_agent
FROM k8s_audit
WHERE object_ref.resource = 'nodes'
  AND object_ref.subresource = 'proxy'
  AND request_succeeded()
  AND NOT regexp_like(COALESCE(request_uri, ''), '/proxy/(metrics(/cadvisor|/probes|/resource)?|stats/summary|healthz)([?].*)?$')
