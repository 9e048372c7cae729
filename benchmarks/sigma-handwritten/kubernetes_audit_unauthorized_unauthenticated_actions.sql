-- id: hand.0d933542-1f1f-420d-97d4-21b2c3c492d9
-- title: Kubernetes Unauthorized or Unauthenticated Access
-- severity: low
-- description: Detects when a request to the Kubernetes API is rejected due
--    to lack of authorization or due to an expired authentication token being
--    used. This may indicate an attacker attempting to leverage credentials
--    they have obtained. False positives: A misconfigured RBAC policy, a
--    mistake by a valid user, or a wider issue with authentication tokens can
--    also generate these errors.
-- mitre: none
-- source: k8s_audit
-- tags: handwritten, attack.privilege-escalation
-- author: kelnage
-- references: https://kubernetes.io/docs/reference/config-api/apiserver-audit.v1/, https://www.datadoghq.com/blog/monitor-kubernetes-audit-logs/#monitor-api-authentication-issues
-- based_on: sigma:0d933542-1f1f-420d-97d4-21b2c3c492d9
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
WHERE response_status.code IN (401, 403)
