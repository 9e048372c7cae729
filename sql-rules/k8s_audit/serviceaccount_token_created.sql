-- id: k8s.serviceaccount_token_created
-- title: Service account token minted
-- severity: low
-- description: Someone requested a token for a service account through the
--    serviceaccounts/token subresource (kubectl create token, TokenRequest). Such
--    tokens can be made long-lived and let the holder act as the service account
--    from outside the cluster. Not reported: the tokens the cluster mints for
--    itself (legitimate_token_request: kubelets minting pod-bound tokens, which
--    NodeRestriction confines to their own pods; kube-controller-manager minting
--    its controllers' tokens in kube-system). Anyone else is reported, system
--    accounts included; a token for a system namespace's account is also
--    k8s.system_serviceaccount_token_minted, at high severity.
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
  json_get_str(request_object, 'spec', 'boundObjectRef', 'kind') AS bound_to,
  source_ips[1] AS source_ip,
  user_agent AS user_agent
FROM k8s_audit
WHERE token_request()
  AND NOT legitimate_token_request()
