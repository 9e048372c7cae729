-- id: hand.40967487-139b-4811-81d9-c9767a92aa5a
-- title: Deployment Deleted From Kubernetes Cluster
-- severity: low
-- description: Detects the removal of a deployment from a Kubernetes cluster.
--    This could indicate disruptive activity aiming to impact business
--    operations. False positives: Unknown.
-- mitre: T1498
-- source: k8s_audit
-- tags: handwritten, attack.impact
-- author: Leo Tsaousis (@laripping)
-- references: https://microsoft.github.io/Threat-Matrix-for-Kubernetes/techniques/Data%20destruction/
-- based_on: sigma:40967487-139b-4811-81d9-c9767a92aa5a
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
WHERE verb = 'delete' AND object_ref.resource = 'deployments'
