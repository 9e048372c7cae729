-- id: hand.58d31a75-a4f8-4c40-985b-373d58162ca2
-- title: Kubernetes Secrets Modified or Deleted
-- severity: medium
-- description: Detects when Kubernetes Secrets are Modified or Deleted. False
--    positives: Secrets being modified or deleted may be performed by a
--    system administrator.; Automated processes may need to take these
--    actions and may need to be filtered.
-- mitre: none
-- source: k8s_audit
-- tags: handwritten, attack.credential-access
-- author: kelnage
-- references: https://kubernetes.io/docs/reference/config-api/apiserver-audit.v1/, https://commandk.dev/blog/guide-to-audit-k8s-secrets-for-compliance/
-- based_on: sigma:58d31a75-a4f8-4c40-985b-373d58162ca2
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
WHERE object_ref.resource = 'secrets' AND verb IN ('create', 'delete', 'patch', 'replace', 'update')
