-- id: k8s.image_untrusted_registry
-- title: Workload image from an unapproved registry
-- severity: medium
-- description: A pod or workload was created or changed with a container image hosted on a
--    registry outside the approved_registries list (by default Docker Hub,
--    registry.k8s.io, k8s.gcr.io, gcr.io and *.gcr.io, *-docker.pkg.dev, quay.io,
--    ghcr.io, mcr.microsoft.com, public.ecr.aws, private ECR, ACR, nvcr.io and
--    registry.gitlab.com). Attackers pull tooling and miners from their own
--    registries, often by bare IP address. A site sets its registries in its
--    overlay (lists/*.toml: [approved_registries] items = [...]). The registry is
--    read as image_registry() does (Docker Hub short names are docker.io). Reported
--    whoever made the request; a workload and the objects its controllers create
--    fold into one alert per hour.
-- mitre: T1525, T1195.002, T1610
-- source: k8s_audit
-- tags: supply_chain, attack, execution
-- author: Vigil
-- references: https://kubernetes.io/docs/concepts/containers/images/
-- based_on: vigil:image_untrusted_registry, mitre:T1525
-- suppress: 1h
-- suppress_key: workload
SELECT
  user_info.username AS username,
  object_ref.resource AS resource,
  object_ref.namespace AS namespace,
  object_name() AS name,
  workload_root() AS workload,
  pod_spec.images AS images,
  image_registry(pod_spec.images) AS registries,
  source_ips[1] AS source_ip
FROM k8s_audit
WHERE pod_spec_write()
  AND request_succeeded()
  AND cardinality(pod_spec.images) > 0
  AND NOT all_in_list(image_registry(pod_spec.images), 'approved_registries')
