-- id: k8s.serviceaccount_created_kube_system
-- title: Service account created in a system namespace
-- severity: medium
-- description: A user that is not a control-plane component created a service
--    account in kube-system, kube-public or kube-node-lease. A new account there
--    blends in with the system accounts and is a common persistence step before
--    binding it to a powerful role.
-- mitre: T1136, T1098
-- source: k8s_audit
-- tags: attack, persistence
-- author: Vigil
-- references: https://kubernetes.io/docs/concepts/security/service-accounts/
-- based_on: falco:Service Account Created in Kube Namespace, sigma:kubernetes_audit_serviceaccount_creation
SELECT
  user_info.username AS username,
  object_ref.namespace AS namespace,
  COALESCE(object_ref.name, json_get_str(request_object, 'metadata', 'name')) AS serviceaccount,
  source_ips[1] AS source_ip,
  user_agent AS user_agent
FROM k8s_audit
WHERE object_ref.resource = 'serviceaccounts'
  AND COALESCE(object_ref.subresource, '') = ''
  AND verb = 'create'
  AND object_ref.namespace IN ('kube-system', 'kube-public', 'kube-node-lease')
  AND COALESCE(stage, '') <> 'RequestReceived'
  AND COALESCE(response_status.code, 200) < 400
  AND NOT regexp_like(COALESCE(user_info.username, ''), '^(system:(node:|kube-|apiserver$|serviceaccount:kube-system:)|eks:|aks:|aksService$)')
