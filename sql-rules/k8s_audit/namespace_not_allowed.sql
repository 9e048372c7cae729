-- id: k8s.namespace_not_allowed
-- title: Namespace created outside the site's allowed namespaces
-- severity: low
-- description: A namespace was created whose name is not one of the site's
--    allowed_namespaces (a site policy, empty as shipped: quiet until the site
--    lists its namespaces). An unexpected namespace hides workloads from
--    namespace-scoped monitoring and policies. Reported whoever creates it,
--    except a managed platform's labelled add-ons (platform_managed_write).
-- mitre: T1036.005, T1610
-- source: k8s_audit
-- tags: site_policy, defense_evasion
-- author: Vigil
-- references: https://kubernetes.io/docs/concepts/overview/working-with-objects/namespaces/
-- based_on: falco:Create Disallowed Namespace
SELECT
  user_info.username AS username,
  object_name() AS namespace,
  source_ips[1] AS source_ip,
  user_agent AS user_agent
FROM k8s_audit
WHERE object_ref.resource = 'namespaces'
  AND verb = 'create'
  AND request_succeeded()
  AND cardinality(list('allowed_namespaces')) > 0
  AND NOT in_list(object_name(), 'allowed_namespaces')
  AND NOT platform_managed_write()
