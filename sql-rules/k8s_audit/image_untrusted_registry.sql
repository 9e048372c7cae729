-- id: k8s.image_untrusted_registry
-- title: Workload image from an unapproved registry
-- severity: medium
-- description: A pod or workload was created or changed with a container image
--    hosted on a registry outside the approved list: Docker Hub, registry.k8s.io,
--    k8s.gcr.io, gcr.io / *.gcr.io / *-docker.pkg.dev, quay.io, ghcr.io,
--    mcr.microsoft.com, public.ecr.aws, private ECR (*.dkr.ecr.*.amazonaws.com),
--    ACR (*.azurecr.io), nvcr.io and registry.gitlab.com. Attackers pull tooling
--    and miners from their own registries, often by bare IP address. Edit the
--    list in the WHERE clause to match your organisation. Pods created by
--    control-plane controllers are skipped.
-- mitre: T1525, T1195.002, T1610
-- source: k8s_audit
-- tags: supply_chain, attack, execution
-- author: Vigil
-- references: https://kubernetes.io/docs/concepts/containers/images/
-- based_on: vigil:image_untrusted_registry, mitre:T1525
SELECT
  user_info.username AS username,
  object_ref.resource AS resource,
  object_ref.namespace AS namespace,
  COALESCE(object_ref.name, json_get_str(request_object, 'metadata', 'name')) AS name,
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
  AND cardinality(pod_spec.images) > 0
  -- not every image is an approved one: a Docker Hub short name (no registry
  -- host in the first segment) or a name on an approved registry host
  AND NOT regexp_like(
    array_to_string(pod_spec.images, '|'),
    '^(([a-z0-9_-]+/)*[a-z0-9._-]+(:[^|/@]+)?(@[^|]+)?|(docker\.io|index\.docker\.io|registry-1\.docker\.io|registry\.k8s\.io|k8s\.gcr\.io|gcr\.io|[a-z0-9-]+\.gcr\.io|[a-z0-9-]+-docker\.pkg\.dev|quay\.io|ghcr\.io|mcr\.microsoft\.com|public\.ecr\.aws|[0-9]+\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com|[a-z0-9]+\.azurecr\.io|nvcr\.io|registry\.gitlab\.com)/[^|]+)(\|(([a-z0-9_-]+/)*[a-z0-9._-]+(:[^|/@]+)?(@[^|]+)?|(docker\.io|index\.docker\.io|registry-1\.docker\.io|registry\.k8s\.io|k8s\.gcr\.io|gcr\.io|[a-z0-9-]+\.gcr\.io|[a-z0-9-]+-docker\.pkg\.dev|quay\.io|ghcr\.io|mcr\.microsoft\.com|public\.ecr\.aws|[0-9]+\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com|[a-z0-9]+\.azurecr\.io|nvcr\.io|registry\.gitlab\.com)/[^|]+))*$')
