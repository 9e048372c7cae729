-- id: hand.402b955c-8fe0-4a8c-b635-622b4ac5f902
-- title: Container With A hostPath Mount Created
-- severity: low
-- description: Detects creation of a container with a hostPath mount. A
--    hostPath volume mounts a directory or a file from the node to the
--    container. Attackers who have permissions to create a new pod in the
--    cluster may create one with a writable hostPath volume and chroot to
--    escape to the underlying node. False positives: The DaemonSet controller
--    creates pods with hostPath volumes within the kube-system namespace.
-- mitre: T1611
-- source: k8s_audit
-- tags: handwritten, attack.privilege-escalation
-- author: Leo Tsaousis (@laripping)
-- references: https://microsoft.github.io/Threat-Matrix-for-Kubernetes/techniques/Writable%20hostPath%20mount/, https://blog.appsecco.com/kubernetes-namespace-breakout-using-insecure-host-path-volume-part-1-b382f2a6e216
-- based_on: sigma:402b955c-8fe0-4a8c-b635-622b4ac5f902
SELECT
  user_info.username AS username,
  verb AS verb,
  object_ref.resource AS resource,
  object_ref.subresource AS subresource,
  object_ref.namespace AS namespace,
  object_ref.name AS name,
  request_uri AS uri,
  source_ips[1] AS source_ip,
  user_agent AS user_agent,
  response_status.code AS code
FROM k8s_audit
WHERE verb = 'create' AND object_ref.resource = 'pods' AND cardinality(pod_spec.host_paths) > 0
