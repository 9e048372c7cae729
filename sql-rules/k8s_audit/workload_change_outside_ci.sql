-- id: k8s.workload_change_outside_ci
-- title: Workload changed outside CI/CD in a CI-managed namespace
-- severity: medium
-- description: In one of the site's ci_managed_namespaces, a workload was
--    created, changed or deleted by an identity that is not one of its
--    trusted_ci_principals (site policies, empty as shipped: quiet until the
--    site names its namespaces and pipelines). Production that only a pipeline
--    deploys to changed by hand is drift at best and an intruder at worst. Not
--    reported: the controllers doing their work (created_by_its_controller,
--    controller_cleanup), status and scale subresources. The objects of one
--    workload fold into one alert per hour.
-- mitre: T1610, T1525
-- source: k8s_audit
-- tags: site_policy, supply_chain, execution
-- author: Vigil
-- references: https://kubernetes.io/docs/concepts/workloads/
-- based_on: vigil:workload_change_outside_ci
-- suppress: 1h
-- suppress_key: workload
SELECT
  user_info.username AS username,
  verb AS verb,
  object_ref.resource AS resource,
  object_ref.namespace AS namespace,
  object_name() AS name,
  workload_root() AS workload,
  source_ips[1] AS source_ip,
  user_agent AS user_agent
FROM k8s_audit
WHERE in_list(object_ref.resource, 'workload_resources')
  AND object_ref.subresource IS NULL
  AND verb IN ('create', 'update', 'patch', 'delete')
  AND request_succeeded()
  AND in_list(object_ref.namespace, 'ci_managed_namespaces')
  AND NOT in_list(user_info.username, 'trusted_ci_principals')
  AND NOT created_by_its_controller()
  AND NOT controller_cleanup()
