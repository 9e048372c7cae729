-- id: k8s.pod_sensitive_hostpath
-- title: Pod mounting a sensitive host path
-- severity: high
-- description: A pod or workload was created or changed with a hostPath volume on a sensitive
--    node path (the sensitive_host_paths list, compared after path_clean(), so
--    "//etc/." is /etc): the root filesystem, /etc, /root, /proc, /sys, /boot, /home,
--    the kubelet state, the Kubernetes configuration and manifests, or a container
--    runtime socket. Each lets the container take over the node or read its credentials.
--    Whoever made the request is reported, controllers and kube-system accounts
--    included. The objects a workload's controllers create fold into the
--    workload's alert (one alert per workload and hour, then a summary naming the
--    folded events). Not reported: pods and ReplicaSets a controller rolls out for
--    their owner, or a kubelet mirrors, when every image is one of the
--    trusted_workload_images.
-- mitre: T1611, T1552
-- source: k8s_audit
-- tags: attack, privilege_escalation, container_escape
-- author: Vigil
-- references: https://kubernetes.io/docs/concepts/storage/volumes/#hostpath
-- based_on: falco:Create Sensitive Mount Pod, sigma:kubernetes_audit_hostpath_mount
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
  pod_spec.images AS images,
  source_ips[1] AS source_ip
FROM k8s_audit
WHERE pod_spec_write()
  AND request_succeeded()
  AND any_in_list(path_clean(pod_spec.host_paths), 'sensitive_host_paths')
  AND NOT trusted_workload_rollout()
