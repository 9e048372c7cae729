-- id: hand.e31bae15-83ed-473e-bf31-faf4f8a17d36
-- title: New Kubernetes Service Account Created
-- severity: low
-- description: Detects creation of new Kubernetes service account, which
--    could indicate an attacker's attempt to persist within a cluster. False
--    positives: Unknown.
-- mitre: T1136
-- source: k8s_audit
-- tags: handwritten, attack.persistence
-- author: Leo Tsaousis (@laripping)
-- references: https://microsoft.github.io/Threat-Matrix-for-Kubernetes/techniques/container%20service%20account/
-- based_on: sigma:e31bae15-83ed-473e-bf31-faf4f8a17d36
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
WHERE verb = 'create' AND object_ref.resource = 'serviceaccounts'
