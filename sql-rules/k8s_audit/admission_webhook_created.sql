-- id: k8s.admission_webhook_created
-- title: Admission webhook created
-- severity: medium
-- description: A MutatingWebhookConfiguration or ValidatingWebhookConfiguration
--    was created. An admission webhook sees (and, if mutating, can rewrite) every
--    matching API request: attackers use one to inject backdoor containers into
--    new pods, harvest secrets, or block security tooling.
-- mitre: T1546, T1552, T1554
-- source: k8s_audit
-- tags: attack, persistence, credential_access
-- author: Vigil
-- references: https://kubernetes.io/docs/reference/access-authn-authz/extensible-admission-controllers/
-- based_on: panther:Kubernetes.AdmissionController.Created, sigma:kubernetes_audit_change_admission_controller
SELECT
  user_info.username AS username,
  object_ref.resource AS resource,
  object_name() AS name,
  json_path_values(request_object, '$.webhooks[*].clientConfig.url') AS urls,
  json_path_values(request_object, '$.webhooks[*].clientConfig.service.name') AS services,
  source_ips[1] AS source_ip,
  user_agent AS user_agent
FROM k8s_audit
WHERE object_ref.resource IN ('mutatingwebhookconfigurations', 'validatingwebhookconfigurations')
  AND verb = 'create'
  AND request_succeeded()
