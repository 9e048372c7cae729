-- id: k8s.pod_steal_serviceaccount_token
-- title: Service account token read through exec
-- severity: high
-- description: A command run in a container through the API (kubectl exec)
--    references a projected credential directory: the Kubernetes service account
--    token (/var/run/secrets/kubernetes.io/serviceaccount), the EKS IRSA token or
--    the Azure workload identity token. Stealing the token lets the caller act as
--    the pod's service account (or cloud identity) from anywhere. Control-plane
--    components working in system namespaces and failed requests are ignored.
-- mitre: T1552.007, T1528, T1550.001
-- source: k8s_audit
-- tags: attack, credential_access, lateral_movement
-- author: Vigil
-- references: https://stratus-red-team.cloud/attack-techniques/kubernetes/k8s.credential-access.steal-serviceaccount-token/
-- based_on: panther:Kubernetes.Pod.StealServiceAccountToken
SELECT
  user_info.username AS username,
  object_ref.namespace AS namespace,
  object_ref.name AS pod,
  COALESCE(NULLIF(array_to_string(json_path_values(request_object, '$.command[*]'), ' '), ''), request_uri) AS command,
  json_get_str(request_object, 'container') AS container,
  source_ips[1] AS source_ip,
  user_agent AS user_agent
FROM k8s_audit
WHERE object_ref.resource = 'pods'
  AND object_ref.subresource IN ('exec', 'attach')
  AND verb IN ('create', 'get')
  AND COALESCE(stage, '') <> 'RequestReceived'
  AND COALESCE(response_status.code, 200) < 400
  AND regexp_like(
    lower(COALESCE(array_to_string(json_path_values(request_object, '$.command[*]'), ' '), '') || ' ' || COALESCE(request_uri, '')),
    '(/|%2f)run(/|%2f)secrets(/|%2f)(kubernetes\.io|eks\.amazonaws\.com|azure|tokens)')
  AND NOT (regexp_like(COALESCE(user_info.username, ''), '^(system:(node:|kube-|apiserver$|serviceaccount:kube-system:)|eks:|aks:|aksService$)')
           AND object_ref.namespace IN ('kube-system', 'kube-public', 'kube-node-lease'))
