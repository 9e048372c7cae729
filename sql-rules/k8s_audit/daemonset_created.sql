-- id: k8s.daemonset_created
-- title: DaemonSet created
-- severity: low
-- description: A DaemonSet was created. It runs a copy of its pod on every node,
--    which makes it the natural vehicle for cluster-wide persistence, credential
--    harvesting on each node, or cryptomining. Reported whoever makes the
--    request, system accounts included (the DaemonSet controller creates pods,
--    never DaemonSets), except a managed platform's labelled add-ons
--    (platform_managed_write); failed requests are ignored.
-- mitre: T1610, T1543
-- source: k8s_audit
-- tags: attack, persistence, execution
-- author: Vigil
-- references: https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/
-- based_on: panther:Kubernetes.DaemonSet.Created
SELECT
  user_info.username AS username,
  object_ref.namespace AS namespace,
  object_name() AS daemonset,
  pod_spec.images AS images,
  pod_spec.host_paths AS host_paths,
  source_ips[1] AS source_ip,
  user_agent AS user_agent
FROM k8s_audit
WHERE object_ref.resource = 'daemonsets'
  AND COALESCE(object_ref.subresource, '') = ''
  AND verb = 'create'
  AND request_succeeded()
  AND NOT platform_managed_write()
