-- id: k8s.pod_host_network
-- title: Pod using the host network namespace
-- severity: medium
-- description: A pod or workload was created or changed with hostNetwork: true. The pod
--    shares the node's network stack: it can sniff and spoof node traffic, reach
--    services bound to localhost and bypass network policies.
--    Whoever made the request is reported, controllers and kube-system accounts
--    included. The objects a workload's controllers create fold into the
--    workload's alert (one alert per workload and hour, then a summary naming the
--    folded events). Not reported: pods and ReplicaSets a controller rolls out for
--    their owner, or a kubelet mirrors, when every image is one of the
--    trusted_workload_images.
-- mitre: T1610, T1557
-- source: k8s_audit
-- tags: attack, privilege_escalation, cis_5.2
-- author: Vigil
-- references: https://kubernetes.io/docs/concepts/security/pod-security-standards/#baseline
-- based_on: panther:Kubernetes.Pod.Host.Network, falco:Create HostNetwork Pod
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
  AND pod_spec.host_network
  AND NOT trusted_workload_rollout()
