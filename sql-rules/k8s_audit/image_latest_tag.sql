-- id: k8s.image_latest_tag
-- title: Workload uses an unpinned image (:latest or no tag)
-- severity: info
-- description: A pod or workload was created or changed with a container image that has no
--    tag, or the :latest tag, and no digest. What runs then depends on whatever was
--    last pushed, which lets a compromised or typosquatted image slip into the
--    cluster unnoticed, and makes incidents hard to reconstruct. Reported whoever
--    made the request; a workload and the objects its controllers create fold into
--    one alert per hour.
-- mitre: T1525, T1195.002
-- source: k8s_audit
-- tags: supply_chain, compliance
-- author: Vigil
-- references: https://kubernetes.io/docs/concepts/containers/images/#image-names
-- based_on: vigil:image_latest_tag, mitre:T1525
-- suppress: 1h
-- suppress_key: workload
SELECT
  user_info.username AS username,
  object_ref.resource AS resource,
  object_ref.namespace AS namespace,
  object_name() AS name,
  workload_root() AS workload,
  pod_spec.images AS images
FROM k8s_audit
WHERE pod_spec_write()
  AND request_succeeded()
  -- some image whose last path segment has no tag (or :latest) and no digest
  AND regexp_like(
    array_to_string(pod_spec.images, '|'),
    '(^|\|)([^|@]*/)?[^|/:@]+(:latest)?(\||$)')
