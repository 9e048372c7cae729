-- id: hand.eed82177-38f5-4299-8a76-098d50d225ab
-- title: Kubernetes Admission Controller Modification
-- severity: medium
-- description: Detects when a modification (create, update or replace) action
--    is taken that affects mutating or validating webhook configurations, as
--    they can be used by an adversary to achieve persistence or exfiltrate
--    access credentials. False positives: Modifying the Kubernetes Admission
--    Controller may need to be done by a system administrator.; Automated
--    processes may need to take these actions and may need to be filtered.
-- mitre: T1078, T1552, T1552.007
-- source: k8s_audit
-- tags: handwritten, attack.privilege-escalation, attack.initial-access, attack.persistence, attack.stealth, attack.credential-access
-- author: kelnage
-- references: https://kubernetes.io/docs/reference/config-api/apiserver-audit.v1/, https://security.padok.fr/en/blog/kubernetes-webhook-attackers
-- based_on: sigma:eed82177-38f5-4299-8a76-098d50d225ab
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
WHERE object_ref.api_group = 'admissionregistration.k8s.io'
  AND object_ref.resource IN ('mutatingwebhookconfigurations', 'validatingwebhookconfigurations')
  AND verb IN ('create', 'delete', 'patch', 'replace', 'update')
