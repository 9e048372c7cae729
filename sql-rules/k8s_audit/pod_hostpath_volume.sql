-- id: k8s.pod_hostpath_volume
-- title: Pod with a hostPath volume
-- severity: low
-- description: A pod or workload was created or changed with a hostPath volume, which gives
--    the container direct access to the node's filesystem. Any hostPath is reported
--    here; k8s.pod_sensitive_hostpath raises a high alert for the dangerous paths.
--    Whoever made the request is reported, controllers and kube-system accounts
--    included. The objects a workload's controllers create fold into the
--    workload's alert (one alert per workload and hour, then a summary naming the
--    folded events). Not reported: pods and ReplicaSets a controller rolls out for
--    their owner, or a kubelet mirrors, when every image is one of the
--    trusted_workload_images.
-- mitre: T1611
-- source: k8s_audit
-- tags: attack, privilege_escalation, cis_5.2
-- author: Vigil
-- references: https://kubernetes.io/docs/concepts/storage/volumes/#hostpath
-- based_on: panther:Kubernetes.Pod.HostPath.Volume, sigma:kubernetes_audit_hostpath_mount
-- suppress: 1h
-- suppress_key: workload
SELECT
  user_info.username AS username,
  object_ref.resource AS resource,
  object_ref.namespace AS namespace,
  object_name() AS name,
  workload_root() AS workload,
  verb AS verb,
  pod_spec.host_paths AS host_paths,
  pod_spec.images AS images
FROM k8s_audit
WHERE pod_spec_write()
  AND request_succeeded()
  AND cardinality(pod_spec.host_paths) > 0
  AND NOT trusted_workload_rollout()
