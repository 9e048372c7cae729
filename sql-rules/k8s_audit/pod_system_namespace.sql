-- id: k8s.pod_system_namespace
-- title: Pod created in a system namespace
-- severity: medium
-- description: A pod was created in kube-system, kube-public or kube-node-lease
--    (the system_namespaces list). Attackers hide workloads among
--    the system pods, where they often inherit privileged service accounts. What
--    creates objects there legitimately is not reported: a workload controller
--    rolling out pods or ReplicaSets for their owner, or a kubelet mirroring its
--    static pods, from trusted_workload_images only; and, when the audit policy
--    does not log request bodies, a workload controller creating pods (nothing
--    more can be checked then). A workload created there is not reported itself:
--    the pods its controller creates are, under the workload's key. Anyone else is
--    reported, kube-system accounts included: a pod without an owner created with
--    a controller's token is the attack. The objects of one workload fold into
--    one alert per hour. Subresources (evictions, bindings) and failures are ignored.
-- mitre: T1610, T1036.005
-- source: k8s_audit
-- tags: attack, defense_evasion, persistence
-- author: Vigil
-- references: https://kubernetes.io/docs/concepts/security/rbac-good-practices/
-- based_on: panther:Kubernetes.Pod.SystemNamespace, falco:Pod Created in Kube Namespace, sigma:kubernetes_audit_pod_in_system_namespace
-- suppress: 1h
-- suppress_key: workload
SELECT
  user_info.username AS username,
  object_ref.resource AS resource,
  object_ref.namespace AS namespace,
  object_name() AS name,
  workload_root() AS workload,
  pod_spec.images AS images,
  source_ips[1] AS source_ip,
  user_agent AS user_agent
FROM k8s_audit
WHERE verb = 'create'
  AND object_ref.resource = 'pods'
  AND COALESCE(object_ref.subresource, '') = ''
  AND in_system_namespace()
  AND request_succeeded()
  AND NOT unlogged_controller_create()
  AND NOT trusted_workload_rollout()
