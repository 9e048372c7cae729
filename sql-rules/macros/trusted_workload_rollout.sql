-- macro: trusted_workload_rollout
-- description: A controller rolled out (or a kubelet mirrored) pods or
--    ReplicaSets whose every image is one of the trusted_workload_images:
--    the cluster's system components and known node agents, which run
--    privileged or on the host by design. A change of the workload itself
--    (its DaemonSet or Deployment) is not covered and still alerts.
COALESCE(
  (created_by_its_controller() OR mirror_pod_of_own_node())
  AND cardinality(pod_spec.images) > 0
  AND all_in_list(image_repository(pod_spec.images), 'trusted_workload_images'),
  FALSE)
