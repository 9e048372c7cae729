-- id: hand.10b97915-ec8d-455f-a815-9a78926585f6
-- title: Kubernetes Rolebinding Modification
-- severity: medium
-- description: Detects when a Kubernetes Rolebinding is created or modified.
--    False positives: Modifying a Kubernetes Rolebinding may need to be done
--    by a system administrator.; Automated processes may need to take these
--    actions and may need to be filtered.
-- mitre: none
-- source: k8s_audit
-- tags: handwritten, attack.privilege-escalation
-- author: kelnage
-- references: https://kubernetes.io/docs/reference/config-api/apiserver-audit.v1/, https://medium.com/@seifeddinerajhi/kubernetes-rbac-privilege-escalation-exploits-and-mitigations-26c07629eeab
-- based_on: sigma:10b97915-ec8d-455f-a815-9a78926585f6
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
WHERE object_ref.api_group = 'rbac.authorization.k8s.io'
  AND object_ref.resource IN ('clusterrolebindings', 'rolebindings')
  AND verb IN ('create', 'delete', 'patch', 'replace', 'update')
