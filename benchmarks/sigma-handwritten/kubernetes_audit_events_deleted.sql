-- id: hand.3132570d-cab2-4561-9ea6-1743644b2290
-- title: Kubernetes Events Deleted
-- severity: medium
-- description: Detects when events are deleted in Kubernetes. An adversary
--    may delete Kubernetes events in an attempt to evade detection. False
--    positives: Unknown.
-- mitre: T1070
-- source: k8s_audit
-- tags: handwritten, attack.stealth
-- author: Leo Tsaousis (@laripping)
-- references: https://microsoft.github.io/Threat-Matrix-for-Kubernetes/techniques/Delete%20K8S%20events/
-- based_on: sigma:3132570d-cab2-4561-9ea6-1743644b2290
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
WHERE verb = 'delete' AND object_ref.resource = 'events'
