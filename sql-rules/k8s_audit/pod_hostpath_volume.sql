-- id: k8s.pod_hostpath_volume
-- title: Pod with a hostPath volume
-- severity: low
-- description: A pod or workload was created or changed with a hostPath volume,
--    which gives the container direct access to the node's filesystem. Any
--    hostPath is reported here; k8s.pod_sensitive_hostpath raises a high alert
--    for the dangerous paths. Pods created by control-plane controllers are skipped.
-- mitre: T1611
-- source: k8s_audit
-- tags: attack, privilege_escalation, cis_5.2
-- author: Vigil
-- references: https://kubernetes.io/docs/concepts/storage/volumes/#hostpath
-- based_on: panther:Kubernetes.Pod.HostPath.Volume, sigma:kubernetes_audit_hostpath_mount
SELECT
  user_info.username AS username,
  object_ref.resource AS resource,
  object_ref.namespace AS namespace,
  object_ref.name AS name,
  verb AS verb,
  pod_spec.host_paths AS host_paths,
  pod_spec.images AS images
FROM k8s_audit
WHERE object_ref.resource IN ('pods', 'deployments', 'daemonsets', 'statefulsets', 'replicasets',
                              'replicationcontrollers', 'jobs', 'cronjobs', 'podtemplates')
  AND COALESCE(object_ref.subresource, '') = ''
  AND verb IN ('create', 'update', 'patch')
  AND COALESCE(stage, '') <> 'RequestReceived'
  AND COALESCE(response_status.code, 200) < 400
  AND NOT regexp_like(COALESCE(user_info.username, ''), '^(system:(node:|kube-|apiserver$|serviceaccount:kube-system:)|eks:|aks:|aksService$)')
  AND cardinality(pod_spec.host_paths) > 0
