-- id: k8s.admission_webhook_modified
-- title: Admission webhook changed or deleted
-- severity: medium
-- description: An existing MutatingWebhookConfiguration or
--    ValidatingWebhookConfiguration was updated, patched or deleted. Redirecting
--    a webhook to an attacker endpoint intercepts API requests; deleting or
--    loosening a policy webhook (OPA Gatekeeper, Kyverno) disables admission
--    controls. Updates and patches by service accounts are ignored: operators
--    (cert-manager cainjector, Gatekeeper, ingress-nginx, prometheus-operator)
--    rewrite their own webhooks' CA bundles all the time. Deletions by service
--    accounts are reported; control-plane components are ignored.
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
  AND COALESCE(stage, '') <> 'RequestReceived'
  AND COALESCE(response_status.code, 200) < 400
  AND NOT regexp_like(COALESCE(user_info.username, ''), '^(system:(node:|kube-|apiserver$|serviceaccount:kube-system:)|eks:|aks:|aksService$)')
  AND NOT (starts_with(COALESCE(user_info.username, ''), 'system:serviceaccount:') AND verb IN ('update', 'patch'))
