-- id: k8s.system_serviceaccount_token_minted
-- title: Token minted for a system service account
-- severity: high
-- description: A token was minted with the TokenRequest API (kubectl create
--    token) for a service account in kube-system, kube-public or kube-node-lease
--    by anyone but the cluster itself (legitimate_token_request: a kubelet's
--    pod-bound token, kube-controller-manager's own controllers' tokens). A
--    controller's account (replicaset-controller, clusterrole-aggregation-
--    controller, daemon-set-controller, ...) holds rights to create pods
--    anywhere, escalate roles or read secrets, and its requests look like the
--    controller's own: minting its token is how an attacker with create on
--    serviceaccounts/token becomes it. What the minted token then does is
--    reported by the rules that no longer trust system accounts by name
--    (ownerless pods, RBAC changes, use from outside the cluster's networks).
-- mitre: T1528, T1078.004, T1098
-- source: k8s_audit
-- tags: attack, credential_access, privilege_escalation, stolen_credentials
-- author: Vigil
-- references: https://kubernetes.io/docs/reference/kubernetes-api/authentication-resources/token-request-v1/
-- based_on: vigil:system_serviceaccount_token_minted, mitre:T1528
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
  AND in_system_namespace()
  AND NOT legitimate_token_request()
