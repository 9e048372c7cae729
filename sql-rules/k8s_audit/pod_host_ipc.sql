-- id: k8s.pod_host_ipc
-- title: Pod using the host IPC namespace
-- severity: medium
-- description: A pod or workload was created or changed with hostIPC: true. The pod shares the node's IPC namespace: it can read and write shared memory of host processes.
--    Pods created by control-plane controllers are skipped (their workload is
--    checked instead), as are failed requests.
-- mitre: T1611
-- source: k8s_audit
-- tags: attack, privilege_escalation, cis_5.2
-- author: Vigil
-- references: https://kubernetes.io/docs/concepts/security/pod-security-standards/#baseline
-- based_on: panther:Kubernetes.Pod.Host.IPC, falco:Create HostIPC Pod
SELECT
  user_info.username AS username,
  object_ref.resource AS resource,
  object_ref.namespace AS namespace,
  object_ref.name AS name,
  verb AS verb,
  pod_spec.images AS images,
  source_ips[1] AS source_ip
FROM k8s_audit
WHERE object_ref.resource IN ('pods', 'deployments', 'daemonsets', 'statefulsets', 'replicasets',
                              'replicationcontrollers', 'jobs', 'cronjobs', 'podtemplates')
  AND COALESCE(object_ref.subresource, '') = ''
  AND verb IN ('create', 'update', 'patch')
  AND COALESCE(stage, '') <> 'RequestReceived'
  AND COALESCE(response_status.code, 200) < 400
  AND NOT regexp_like(COALESCE(user_info.username, ''), '^(system:(node:|kube-|apiserver$|serviceaccount:kube-system:)|eks:|aks:|aksService$)')
  AND pod_spec.host_ipc
