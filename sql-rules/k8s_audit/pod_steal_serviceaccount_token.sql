-- id: k8s.pod_steal_serviceaccount_token
-- title: Service account token read through exec
-- severity: high
-- description: A command run in a container through the API (kubectl exec)
--    references a projected credential directory: the Kubernetes service account
--    token (/var/run/secrets/kubernetes.io/serviceaccount), the EKS IRSA token or
--    the Azure workload identity token. Stealing the token lets the caller act as
--    the pod's service account (or cloud identity) from anywhere. Reported whoever
--    runs it, system accounts included; failed requests are ignored.
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
  exec_command() AS command,
  json_get_str(request_object, 'container') AS container,
  source_ips[1] AS source_ip,
  user_agent AS user_agent
FROM k8s_audit
WHERE pod_session()
  AND request_succeeded()
  AND regexp_like(
    lower(COALESCE(exec_command(), '')),
    '(/|%2f)run(/|%2f)secrets(/|%2f)(kubernetes\.io|eks\.amazonaws\.com|azure|tokens)')
