-- id: hand.84b777bd-c946-4d17-aa2e-c39f5a454325
-- title: RBAC Permission Enumeration Attempt
-- severity: low
-- description: Detects identities attempting to enumerate their Kubernetes
--    RBAC permissions. In the early stages of a breach, attackers will aim to
--    list the permissions they have within the compromised environment. In a
--    Kubernetes cluster, this can be achieved by interacting with the API
--    server, and querying the SelfSubjectAccessReview API via e.g. a "kubectl
--    auth can-i --list" command. This will enumerate the Role-Based Access
--    Controls (RBAC) rules defining the compromised user's authorization.
--    False positives: Unknown.
-- mitre: T1069.003, T1087.004
-- source: k8s_audit
-- tags: handwritten, attack.discovery
-- author: Leo Tsaousis (@laripping)
-- references: https://www.elastic.co/guide/en/security/current/kubernetes-suspicious-self-subject-review.html
-- based_on: sigma:84b777bd-c946-4d17-aa2e-c39f5a454325
SELECT
  user_info.username AS username,
  verb AS verb,
  object_ref.resource AS resource,
  object_ref.subresource AS subresource,
  object_ref.namespace AS namespace,
  object_ref.name AS name,
  request_uri AS uri,
  source_ips[1] AS source_ip,
  user_agent AS user_agent,
  response_status.code AS code
FROM k8s_audit
WHERE verb = 'create' AND object_ref.api_group = 'authorization.k8s.io' AND object_ref.resource = 'selfsubjectrulesreviews'
