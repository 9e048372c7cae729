-- id: hand.a1b0ca4e-7835-413e-8471-3ff2b8a66be6
-- title: Potential Remote Command Execution In Pod Container
-- severity: medium
-- description: Detects attempts to execute remote commands, within a Pod's
--    container using e.g. the "kubectl exec" command. False positives:
--    Legitimate debugging activity. Investigate the identity performing the
--    requests and their authorization.
-- mitre: T1609
-- source: k8s_audit
-- tags: handwritten, attack.execution
-- author: Leo Tsaousis (@laripping)
-- references: https://microsoft.github.io/Threat-Matrix-for-Kubernetes/techniques/Exec%20into%20container/
-- based_on: sigma:a1b0ca4e-7835-413e-8471-3ff2b8a66be6
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
WHERE verb = 'create' AND object_ref.resource = 'pods' AND object_ref.subresource = 'exec'
