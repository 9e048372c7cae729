-- id: k8s.pod_dangerous_capabilities
-- title: Container with dangerous Linux capabilities
-- severity: high
-- description: A pod or workload was created or changed with a container that adds a
--    dangerous capability (the dangerous_capabilities list: ALL, SYS_ADMIN, NET_ADMIN,
--    SYS_PTRACE, SYS_MODULE, ...; with or without the CAP_ prefix, any case). These
--    allow container escape, kernel module loading, reading other processes' memory
--    or rewiring node networking.
--    Whoever made the request is reported, controllers and kube-system accounts
--    included. The objects a workload's controllers create fold into the
--    workload's alert (one alert per workload and hour, then a summary naming the
--    folded events). Not reported: pods and ReplicaSets a controller rolls out for
--    their owner, or a kubelet mirrors, when every image is one of the
--    trusted_workload_images.
-- mitre: T1611, T1610
-- source: k8s_audit
-- tags: attack, privilege_escalation
-- author: Vigil
-- references: https://kubernetes.io/docs/concepts/security/pod-security-standards/#baseline
-- based_on: panther:Kubernetes.Pod.Dangerous.Capabilities
-- suppress: 1h
-- suppress_key: workload
SELECT
  user_info.username AS username,
  object_ref.resource AS resource,
  object_ref.namespace AS namespace,
  object_name() AS name,
  workload_root() AS workload,
  verb AS verb,
  pod_spec.added_capabilities AS added_capabilities,
  pod_spec.images AS images,
  source_ips[1] AS source_ip
FROM k8s_audit
WHERE pod_spec_write()
  AND request_succeeded()
  AND any_in_list(capability_names(pod_spec.added_capabilities), 'dangerous_capabilities')
  AND NOT trusted_workload_rollout()
