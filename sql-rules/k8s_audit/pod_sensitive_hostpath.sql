-- id: k8s.pod_sensitive_hostpath
-- title: Pod mounting a sensitive host path
-- severity: high
-- description: A pod or workload was created or changed with a hostPath volume on
--    a sensitive node path: the root filesystem, /etc, /root, /proc, /sys, /boot,
--    /home, the kubelet state, the Kubernetes config/manifests, or a container
--    runtime socket (docker, containerd, cri-o). Each of these lets the container
--    take over the node or read its credentials. Pods created by control-plane
--    controllers are skipped (their workload is checked instead).
-- mitre: T1611, T1552
-- source: k8s_audit
-- tags: attack, privilege_escalation, container_escape
-- author: Vigil
-- references: https://kubernetes.io/docs/concepts/storage/volumes/#hostpath
-- based_on: falco:Create Sensitive Mount Pod, sigma:kubernetes_audit_hostpath_mount
SELECT
  user_info.username AS username,
  object_ref.resource AS resource,
  object_ref.namespace AS namespace,
  object_ref.name AS name,
  verb AS verb,
  pod_spec.host_paths AS host_paths,
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
  AND regexp_like(
    array_to_string(pod_spec.host_paths, '|') || '|',
    '(^|\|)(/+|/etc/?|/etc/kubernetes(/[^|]*)?|/root(/[^|]*)?|/home(/[^|]*)?|/proc(/[^|]*)?|/sys/?|/sys/fs/cgroup/?|/boot/?|/dev/?|/var/lib/kubelet(/[^|]*)?|/var/lib/docker/?|/var/lib/containerd/?|/(var/)?run/?|/(var/)?run/(docker|containerd/containerd|crio/crio|cri-dockerd|k3s/containerd/containerd)\.sock)\|'
  )
