-- id: k8s.serviceaccount_token_created
-- title: Service account token minted
-- severity: low
-- description: Someone requested a token for a service account through the
--    serviceaccounts/token subresource (kubectl create token, TokenRequest). Such
--    tokens can be made long-lived and let the holder act as the service account
--    from outside the cluster. Kubelets minting projected tokens for their pods,
--    control-plane components in system namespaces, and failed requests are ignored.
-- mitre: T1098, T1528, T1552
-- source: k8s_audit
-- tags: attack, persistence, credential_access
-- author: Vigil
-- references: https://stratus-red-team.cloud/attack-techniques/kubernetes/k8s.persistence.create-token/
-- based_on: panther:Kubernetes.ServiceAccount.TokenCreated
SELECT
  user_info.username AS username,
  object_ref.namespace AS namespace,
  object_ref.name AS serviceaccount,
  json_get_int(request_object, 'spec', 'expirationSeconds') AS expiration_seconds,
  source_ips[1] AS source_ip,
  user_agent AS user_agent
FROM k8s_audit
WHERE object_ref.resource = 'serviceaccounts'
  AND object_ref.subresource = 'token'
  AND verb = 'create'
  AND COALESCE(stage, '') <> 'RequestReceived'
  AND COALESCE(response_status.code, 200) < 400
  AND NOT starts_with(COALESCE(user_info.username, ''), 'system:node:')
  AND NOT (regexp_like(COALESCE(user_info.username, ''), '^(system:(node:|kube-|apiserver$|serviceaccount:kube-system:)|eks:|aks:|aksService$)')
           AND object_ref.namespace IN ('kube-system', 'kube-public', 'kube-node-lease'))
