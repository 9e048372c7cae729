-- id: k8s.admission_webhook_modified
-- title: Admission webhook changed or deleted
-- severity: medium
-- description: An existing MutatingWebhookConfiguration or
--    ValidatingWebhookConfiguration was updated, patched or deleted. Redirecting
--    a webhook to an attacker endpoint intercepts API requests; deleting or
--    loosening a policy webhook (OPA Gatekeeper, Kyverno) disables admission
--    controls. Operators (cert-manager's cainjector, Gatekeeper, ingress-nginx,
--    prometheus-operator) rewrite the CA bundles of webhooks all the time: an
--    update or patch by a service account is not reported when no webhook of
--    the request body calls a URL (clientConfig.url), i.e. when the webhooks
--    still call in-cluster services. A service account pointing a webhook at a
--    URL, anyone else's change, and every deletion are reported, system
--    accounts included. Without request bodies (Metadata audit level) a service
--    account's update cannot be told from a redirect and is not reported.
-- mitre: T1562.001, T1546
-- source: k8s_audit
-- tags: attack, defense_evasion, persistence
-- author: Vigil
-- references: https://kubernetes.io/docs/reference/access-authn-authz/extensible-admission-controllers/
-- based_on: sigma:kubernetes_audit_change_admission_controller
SELECT
  user_info.username AS username,
  verb AS verb,
  object_ref.resource AS resource,
  object_ref.name AS name,
  source_ips[1] AS source_ip,
  user_agent AS user_agent
FROM k8s_audit
WHERE object_ref.resource IN ('mutatingwebhookconfigurations', 'validatingwebhookconfigurations')
  AND verb IN ('update', 'patch', 'delete', 'deletecollection')
  AND request_succeeded()
  AND NOT (starts_with(COALESCE(user_info.username, ''), 'system:serviceaccount:')
           AND verb IN ('update', 'patch')
           AND NOT COALESCE(json_path_exists(request_object, '$..clientConfig.url'), FALSE))
