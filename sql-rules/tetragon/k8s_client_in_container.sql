-- id: tetragon.k8s_client_in_container
-- title: Kubernetes or container-runtime client run in a container
-- severity: medium
-- description: kubectl, crictl, ctr, etcdctl, kubeletctl, helm or the docker CLI
--    was executed inside a pod. Application containers have no use for these;
--    attackers bring them to use the pod's service account token against the API
--    server, or a mounted runtime socket to take over the node. Container
--    entrypoints (PID 1 executed as the container started, e.g. CI runner or
--    operator images built around the tool) are ignored.
-- mitre: T1609, T1613, T1552.007
-- source: tetragon
-- tags: attack, execution, discovery, runtime
-- author: Vigil
-- references: https://attack.mitre.org/techniques/T1613/
-- based_on: falco:Contact K8S API Server From Container
SELECT
  node_name AS node,
  process.pod.namespace AS namespace,
  process.pod.name AS pod,
  process.pod.container.image.name AS image,
  process.binary AS binary,
  process.arguments AS arguments,
  parent.binary AS parent_binary
FROM tetragon
WHERE event_type = 'process_exec'
  AND process_in_pod()
  AND NOT process_is_entrypoint()
  AND in_list(process_basename(process.binary), 'k8s_client_binaries')
