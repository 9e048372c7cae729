-- id: k8s.image_not_allowed
-- title: Workload image outside the site's allowed images
-- severity: medium
-- description: A pod or workload was created or changed with an image whose
--    repository is not one of the site's allowed_images (a site policy, empty
--    as shipped: the rule is quiet until the site lists its images in its
--    overlay). Reported whoever made the request; pods and ReplicaSets a
--    controller rolls out from trusted_workload_images are not, and the objects
--    of one workload fold into one alert per hour.
-- mitre: T1610, T1525
-- source: k8s_audit
-- tags: supply_chain, site_policy
-- author: Vigil
-- references: https://kubernetes.io/docs/concepts/containers/images/
-- based_on: falco:Create Disallowed Pod
-- suppress: 1h
-- suppress_key: workload
SELECT
  user_info.username AS username,
  object_ref.resource AS resource,
  object_ref.namespace AS namespace,
  object_name() AS name,
  workload_root() AS workload,
  image_repository(pod_spec.images) AS repositories,
  source_ips[1] AS source_ip
FROM k8s_audit
WHERE pod_spec_write()
  AND request_succeeded()
  AND cardinality(list('allowed_images')) > 0
  AND cardinality(pod_spec.images) > 0
  AND NOT all_in_list(image_repository(pod_spec.images), 'allowed_images')
  AND NOT trusted_workload_rollout()
