-- id: k8s.serviceaccount_created_kube_system
-- title: Service account created in a system namespace
-- severity: medium
-- description: A service account was created in kube-system, kube-public or
--    kube-node-lease (system_namespaces). A new account there blends in with the
--    system accounts and is a common persistence step before binding it to a
--    powerful role. Reported whoever creates it, system accounts included;
--    trusted are the service account controller creating the namespace's
--    default account, the API server's bootstrap, and a managed platform's
--    labelled add-ons (platform_managed_write).
-- mitre: T1136, T1098
-- source: k8s_audit
-- tags: attack, persistence
-- author: Vigil
-- references: https://kubernetes.io/docs/concepts/security/service-accounts/
-- based_on: falco:Service Account Created in Kube Namespace, sigma:kubernetes_audit_serviceaccount_creation
SELECT
  user_info.username AS username,
  object_ref.namespace AS namespace,
  object_name() AS serviceaccount,
  source_ips[1] AS source_ip,
  user_agent AS user_agent
FROM k8s_audit
WHERE object_ref.resource = 'serviceaccounts'
  AND COALESCE(object_ref.subresource, '') = ''
  AND verb = 'create'
  AND in_system_namespace()
  AND request_succeeded()
  AND NOT platform_managed_write()
  AND NOT (user_info.username = 'system:serviceaccount:kube-system:service-account-controller'
           AND object_ref.name = 'default')
  AND NOT (user_info.username = 'system:apiserver'
           AND json_get_str(request_object, 'metadata', 'labels', 'kubernetes.io/bootstrapping') = 'rbac-defaults')
