-- id: k8s.kubectl_cp_from_pod
-- title: Files copied out of a pod (kubectl cp)
-- severity: medium
-- description: An exec request ran "tar cf -" in a container, which is what
--    kubectl cp does to stream files from a pod to the caller. It is a simple way
--    to exfiltrate application secrets, keys and data without touching the
--    pod's network. Copies into a pod (tar xf) are not reported; neither are
--    control-plane components working in system namespaces, nor failed requests.
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
  COALESCE(NULLIF(array_to_string(json_path_values(request_object, '$.command[*]'), ' '), ''), request_uri) AS command,
  source_ips[1] AS source_ip,
  user_agent AS user_agent
FROM k8s_audit
WHERE object_ref.resource = 'pods'
  AND object_ref.subresource = 'exec'
  AND verb IN ('create', 'get')
  AND COALESCE(stage, '') <> 'RequestReceived'
  AND COALESCE(response_status.code, 200) < 400
  AND (regexp_like(COALESCE(request_uri, ''), '[?&]command=tar&command=-?c[a-zA-Z]*f&command=-(&|$)')
       OR regexp_like(COALESCE(array_to_string(json_path_values(request_object, '$.command[*]'), ' '), ''), '^(\S*/)?tar -?c[a-zA-Z]*f - '))
  AND NOT (regexp_like(COALESCE(user_info.username, ''), '^(system:(node:|kube-|apiserver$|serviceaccount:kube-system:)|eks:|aks:|aksService$)')
           AND object_ref.namespace IN ('kube-system', 'kube-public', 'kube-node-lease'))
