-- id: k8s.pod_exec
-- title: Exec or attach into a pod
-- severity: high
-- description: Someone opened an interactive session in a running container
--    (kubectl exec / attach). Attackers use it to run tools inside the cluster.
-- mitre: T1609
-- source: k8s_audit
-- tags: attack, execution
-- author: Vigil
-- references: https://attack.mitre.org/techniques/T1609/
-- based_on: panther:Kubernetes.Pod.Exec, falco:Attach/Exec Pod, sigma:kubernetes_audit_exec_into_container
SELECT
  user_info.username AS username,
  object_ref.namespace AS namespace,
  object_ref.name AS pod,
  object_ref.subresource AS subresource,
  annotations['authorization.k8s.io/decision'] AS decision,
  json_get_str(request_object, 'kind') AS kind
FROM k8s_audit
WHERE object_ref.resource = 'pods'
  AND object_ref.subresource IN ('exec', 'attach')
  AND verb IN ('create', 'get')
