-- id: k8s.pod_host_pid
-- title: Pod using the host PID namespace
-- severity: high
-- description: A pod or workload was created or changed with hostPID: true. The pod sees
--    every process of the node, and with ptrace or a privileged container can
--    enter them (nsenter -t 1) and take over the node.
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
-- references: https://kubernetes.io/docs/concepts/security/pod-security-standards/#baseline
-- based_on: panther:Kubernetes.Pod.Host.PID, falco:Create HostPid Pod
-- suppress: 1h
-- suppress_key: workload
SELECT
  user_info.username AS username,
  object_ref.resource AS resource,
  object_ref.namespace AS namespace,
  object_name() AS name,
  workload_root() AS workload,
  verb AS verb,
  pod_spec.images AS images,
  source_ips[1] AS source_ip
FROM k8s_audit
WHERE pod_spec_write()
  AND request_succeeded()
  AND pod_spec.host_pid
  AND NOT trusted_workload_rollout()
