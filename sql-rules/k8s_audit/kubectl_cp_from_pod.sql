-- id: k8s.kubectl_cp_from_pod
-- title: Files copied out of a pod (kubectl cp)
-- severity: medium
-- description: An exec request ran "tar cf -" in a container, which is what
--    kubectl cp does to stream files from a pod to the caller. It is a simple way
--    to exfiltrate application secrets, keys and data without touching the
--    pod's network. Copies into a pod (tar xf) and failed requests are not
--    reported; anyone else is, system accounts included.
-- mitre: T1530, T1005, T1609
-- source: k8s_audit
-- tags: attack, exfiltration, collection
-- author: Vigil
-- references: https://kubernetes.io/docs/reference/kubectl/generated/kubectl_cp/
-- based_on: panther:Kubernetes.Kubectl.CP.Operation
SELECT
  user_info.username AS username,
  object_ref.namespace AS namespace,
  object_ref.name AS pod,
  exec_command() AS command,
  source_ips[1] AS source_ip,
  user_agent AS user_agent
FROM k8s_audit
WHERE pod_session()
  AND object_ref.subresource = 'exec'
  AND request_succeeded()
  -- the command as the request URI carries it, or as the request body does
  AND (regexp_like(COALESCE(exec_command(), ''), '[?&]command=tar&command=-?c[a-zA-Z]*f&command=-(&|$)')
       OR regexp_like(COALESCE(exec_command(), ''), '^(\S*/)?tar -?c[a-zA-Z]*f - '))
