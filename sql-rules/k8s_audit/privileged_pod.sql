-- id: k8s.privileged_pod
-- title: Privileged or root container created
-- severity: high
-- description: A pod or workload (Deployment, DaemonSet, Job, ...) was created or
--    changed with a privileged container, or with a container that runs as root
--    (runAsUser 0 or runAsNonRoot false). A privileged container has every
--    capability and all host devices and can take over the node. Pods created by
--    control-plane controllers are skipped (their workload is checked instead).
-- mitre: T1610, T1611
-- source: k8s_audit
-- tags: attack, privilege_escalation, cis_5.2
-- author: Vigil
-- references: https://kubernetes.io/docs/concepts/security/pod-security-standards/
-- based_on: panther:Kubernetes.Pod.Privileged.Created, falco:Create Privileged Pod, sigma:kubernetes_audit_privileged_pod_creation
SELECT
  user_info.username AS username,
  object_ref.resource AS resource,
  object_ref.namespace AS namespace,
  object_ref.name AS name,
  verb AS verb,
  CASE
    WHEN pod_spec.privileged THEN 'privileged'
    WHEN pod_spec.run_as_root THEN 'runAsUser 0'
    ELSE 'runAsNonRoot false'
  END AS reason,
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
  AND (
    pod_spec.privileged
    OR pod_spec.run_as_root
    OR pod_spec.run_as_non_root_false
  )
