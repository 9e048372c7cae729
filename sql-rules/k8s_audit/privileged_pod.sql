-- id: k8s.privileged_pod
-- title: Privileged or root container created
-- severity: high
-- description: A pod or workload (Deployment, DaemonSet, Job, ...) was created or
--    changed with a privileged container, or with a container that runs as root
--    (runAsUser 0 or runAsNonRoot false). A privileged container has every
--    capability and all host devices and can take over the node. Whoever made
--    the request is reported, controllers and kube-system accounts included: a
--    stolen controller token creating an ownerless privileged pod is the attack.
--    The objects a workload's controllers create fold into the workload's alert
--    (suppress_key workload: one alert per workload and hour, then a summary
--    naming the folded events). Not reported: pods and ReplicaSets a controller
--    rolls out for their owner, or a kubelet mirrors, when every image is one of
--    the trusted_workload_images (system components and node agents).
-- mitre: T1610, T1611
-- source: k8s_audit
-- tags: attack, privilege_escalation, cis_5.2
-- author: Vigil
-- references: https://kubernetes.io/docs/concepts/security/pod-security-standards/
-- based_on: panther:Kubernetes.Pod.Privileged.Created, falco:Create Privileged Pod, sigma:kubernetes_audit_privileged_pod_creation
-- suppress: 1h
-- suppress_key: workload
SELECT
  user_info.username AS username,
  object_ref.resource AS resource,
  object_ref.namespace AS namespace,
  object_name() AS name,
  workload_root() AS workload,
  verb AS verb,
  CASE
    WHEN pod_spec.privileged THEN 'privileged'
    WHEN pod_spec.run_as_root THEN 'runAsUser 0'
    ELSE 'runAsNonRoot false'
  END AS reason,
  pod_spec.images AS images,
  source_ips[1] AS source_ip
FROM k8s_audit
WHERE pod_spec_write()
  AND request_succeeded()
  AND (pod_spec.privileged OR pod_spec.run_as_root OR pod_spec.run_as_non_root_false)
  AND NOT trusted_workload_rollout()
