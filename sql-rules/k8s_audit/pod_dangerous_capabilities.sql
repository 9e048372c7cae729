-- id: k8s.pod_dangerous_capabilities
-- title: Container with dangerous Linux capabilities
-- severity: high
-- description: A pod or workload was created or changed with a container that
--    adds a dangerous capability: ALL, SYS_ADMIN, NET_ADMIN, SYS_PTRACE,
--    SYS_MODULE, SYS_RAWIO, SYS_BOOT, DAC_READ_SEARCH, BPF or PERFMON. These allow
--    container escape, kernel module loading, reading other processes' memory or
--    rewiring node networking. Pods created by control-plane controllers are
--    skipped (their workload is checked instead).
-- mitre: T1611, T1610
-- source: k8s_audit
-- tags: attack, privilege_escalation
-- author: Vigil
-- references: https://kubernetes.io/docs/concepts/security/pod-security-standards/#baseline
-- based_on: panther:Kubernetes.Pod.Dangerous.Capabilities
SELECT
  user_info.username AS username,
  object_ref.resource AS resource,
  object_ref.namespace AS namespace,
  object_ref.name AS name,
  verb AS verb,
  pod_spec.added_capabilities AS added_capabilities,
  pod_spec.images AS images,
  source_ips[1] AS source_ip
FROM k8s_audit
WHERE object_ref.resource IN ('pods', 'deployments', 'daemonsets', 'statefulsets', 'replicasets',
                              'replicationcontrollers', 'jobs', 'cronjobs', 'podtemplates')
  AND COALESCE(object_ref.subresource, '') IN ('', 'ephemeralcontainers')
  AND verb IN ('create', 'update', 'patch')
  AND COALESCE(stage, '') <> 'RequestReceived'
  AND COALESCE(response_status.code, 200) < 400
  AND NOT regexp_like(COALESCE(user_info.username, ''), '^(system:(node:|kube-|apiserver$|serviceaccount:kube-system:)|eks:|aks:|aksService$)')
  AND regexp_like(
    upper(array_to_string(pod_spec.added_capabilities, '|')),
    '(^|\|)(CAP_)?(ALL|SYS_ADMIN|NET_ADMIN|SYS_PTRACE|SYS_MODULE|SYS_RAWIO|SYS_BOOT|DAC_READ_SEARCH|BPF|PERFMON)(\||$)')
