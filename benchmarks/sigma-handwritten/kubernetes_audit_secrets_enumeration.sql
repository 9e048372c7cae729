-- id: hand.eeb3e9e1-b685-44e4-9232-6bb701f925b5
-- title: Kubernetes Secrets Enumeration
-- severity: low
-- description: Detects enumeration of Kubernetes secrets. False positives:
--    The Kubernetes dashboard occasionally accesses the
--    kubernetes-dashboard-key-holder secret.
-- mitre: T1552.007
-- source: k8s_audit
-- tags: handwritten, attack.credential-access
-- author: Leo Tsaousis (@laripping)
-- references: https://microsoft.github.io/Threat-Matrix-for-Kubernetes/techniques/List%20K8S%20secrets/
-- based_on: sigma:eeb3e9e1-b685-44e4-9232-6bb701f925b5
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
WHERE verb = 'list' AND object_ref.resource = 'secrets'
