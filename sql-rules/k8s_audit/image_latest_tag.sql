-- id: k8s.image_latest_tag
-- title: Workload uses an unpinned image (:latest or no tag)
-- severity: info
-- description: A pod or workload was created or changed with a container image
--    that has no tag, or the :latest tag, and no digest. What runs then depends
--    on whatever was last pushed, which lets a compromised or typosquatted image
--    slip into the cluster unnoticed, and makes incidents hard to reconstruct.
--    Pods created by control-plane controllers are skipped.
-- mitre: T1525, T1195.002
-- source: k8s_audit
-- tags: supply_chain, compliance
-- author: Vigil
-- references: https://kubernetes.io/docs/concepts/containers/images/#image-names
-- based_on: vigil:image_latest_tag, mitre:T1525
SELECT
  user_info.username AS username,
  object_ref.resource AS resource,
  object_ref.namespace AS namespace,
  COALESCE(object_ref.name, json_get_str(request_object, 'metadata', 'name')) AS name,
  pod_spec.images AS images
FROM k8s_audit
WHERE object_ref.resource IN ('pods', 'deployments', 'daemonsets', 'statefulsets', 'replicasets',
                              'replicationcontrollers', 'jobs', 'cronjobs', 'podtemplates')
  AND COALESCE(object_ref.subresource, '') IN ('', 'ephemeralcontainers')
  AND verb IN ('create', 'update', 'patch')
  AND COALESCE(stage, '') <> 'RequestReceived'
  AND COALESCE(response_status.code, 200) < 400
  AND NOT regexp_like(COALESCE(user_info.username, ''), '^(system:(node:|kube-|apiserver$|serviceaccount:kube-system:)|eks:|aks:|aksService$)')
  -- some image whose last path segment has no tag (or :latest) and no digest
  AND regexp_like(
    array_to_string(pod_spec.images, '|'),
    '(^|\|)([^|@]*/)?[^|/:@]+(:latest)?(\||$)')
