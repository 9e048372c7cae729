-- id: k8s.ephemeral_container
-- title: Ephemeral container added to a pod
-- severity: medium
-- description: An ephemeral (debug) container was added to a running pod
--    (kubectl debug). It runs an arbitrary image inside the pod's namespaces,
--    can target another container's process namespace, and is not declared in
--    the workload spec. Failed requests are ignored.
-- mitre: T1609, T1610
-- source: k8s_audit
-- tags: attack, execution
-- author: Vigil
-- references: https://kubernetes.io/docs/concepts/workloads/pods/ephemeral-containers/
-- based_on: falco:EphemeralContainers Created
SELECT
  user_info.username AS username,
  object_ref.namespace AS namespace,
  object_ref.name AS pod,
  json_path_values(request_object, '$.spec.ephemeralContainers[*].image') AS images,
  json_path_values(request_object, '$.spec.ephemeralContainers[*].targetContainerName') AS targets,
  source_ips[1] AS source_ip
FROM k8s_audit
WHERE object_ref.resource = 'pods'
  AND object_ref.subresource = 'ephemeralcontainers'
  AND verb IN ('update', 'patch', 'create')
  AND request_succeeded()
