-- id: k8s.pod_exec
-- title: Exec or attach into a pod
-- severity: medium
-- description: Someone opened a session in a running container (kubectl exec /
--    attach). Attackers use it to run tools inside the cluster and to read the
--    container's secrets. Failed (4xx) requests are ignored.
-- mitre: T1609
-- source: k8s_audit
-- tags: attack, execution
-- author: Vigil
-- references: https://attack.mitre.org/techniques/T1609/, https://kubernetes.io/docs/tasks/debug/debug-application/get-shell-running-container/
-- based_on: panther:Kubernetes.Pod.Exec, falco:Attach/Exec Pod, sigma:kubernetes_audit_exec_into_container
SELECT
  user_info.username AS username,
  object_ref.namespace AS namespace,
  object_ref.name AS pod,
  object_ref.subresource AS subresource,
  request_uri AS uri,
  source_ips[1] AS source_ip,
  user_agent AS user_agent,
  response_status.code AS code
FROM k8s_audit
WHERE pod_session()
  AND request_succeeded()
