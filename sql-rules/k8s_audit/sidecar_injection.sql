-- id: k8s.sidecar_injection
-- title: Containers patched into a running workload
-- severity: low
-- description: A hand-made patch of a Deployment, DaemonSet or StatefulSet
--    carried containers: the way to slip a sidecar into a legitimate workload's
--    pods, where it runs beside the real application, with its service account,
--    volumes and network, instead of as a pod of its own (Microsoft's Threat
--    Matrix for Kubernetes: Sidecar Injection). Hand-made means sent by kubectl
--    patch (fieldManager=kubectl-patch) or with no field manager at all (curl, a
--    script); the patches of deployment tools name theirs (kubectl apply and set
--    image, Helm, Argo CD, Flux) and are not reported, nor are the site's
--    trusted_ci_principals. The field manager is the client's to name: an
--    attacker who sends fieldManager=helm is not seen here, but the pod-spec and
--    registry rules still judge what the containers are. Needs request bodies.
--    The patches of one workload fold into one alert per hour.
-- mitre: T1609, T1610, T1525
-- source: k8s_audit
-- tags: attack, execution, persistence
-- author: Vigil
-- references: https://microsoft.github.io/Threat-Matrix-for-Kubernetes/techniques/Sidecar%20Injection/
-- based_on: sigma:kubernetes_audit_sidecar_injection
-- suppress: 1h
-- suppress_key: workload
SELECT
  user_info.username AS username,
  object_ref.resource AS resource,
  object_ref.namespace AS namespace,
  object_name() AS name,
  workload_root() AS workload,
  json_path_values(request_object, '$..containers[*].name') AS containers,
  pod_spec.images AS images,
  source_ips[1] AS source_ip,
  user_agent AS user_agent
FROM k8s_audit
WHERE pod_spec_write()
  AND verb = 'patch'
  AND object_ref.resource IN ('deployments', 'daemonsets', 'statefulsets')
  AND request_succeeded()
  AND cardinality(pod_spec.images) > 0
  AND (request_uri IS NULL
       OR regexp_like(request_uri, '[?&]fieldManager=kubectl-patch(&|$)')
       OR NOT regexp_like(request_uri, '[?&]fieldManager='))
  AND NOT in_list(user_info.username, 'trusted_ci_principals')
