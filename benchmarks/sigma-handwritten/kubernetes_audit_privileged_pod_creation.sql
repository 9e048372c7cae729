-- id: hand.c5cd1b20-36bb-488d-8c05-486be3d0cb97
-- title: Privileged Container Deployed
-- severity: low
-- description: Detects the creation of a "privileged" container, an action
--    which could be indicative of a threat actor mounting a container
--    breakout attacks. A privileged container is a container that can access
--    the host with all of the root capabilities of the host machine. This
--    allows it to view, interact and modify processes, network operations,
--    IPC calls, the file system, mount points, SELinux configurations etc. as
--    the root user on the host. Various versions of "privileged" containers
--    can be specified, e.g. by setting the securityContext.privileged flag in
--    the resource specification, setting non-standard Linux capabilities, or
--    configuring the hostNetwork/hostPID fields False positives: Unknown.
-- mitre: T1611
-- source: k8s_audit
-- tags: handwritten, attack.privilege-escalation
-- author: Leo Tsaousis (@laripping)
-- references: https://microsoft.github.io/Threat-Matrix-for-Kubernetes/techniques/Privileged%20container/, https://docs.aws.amazon.com/guardduty/latest/ug/guardduty_finding-types-kubernetes.html#privilegeescalation-kubernetes-privilegedcontainer, https://www.elastic.co/guide/en/security/current/kubernetes-pod-created-with-hostnetwork.html, https://www.elastic.co/guide/en/security/current/kubernetes-container-created-with-excessive-linux-capabilities.html
-- based_on: sigma:c5cd1b20-36bb-488d-8c05-486be3d0cb97
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
WHERE verb = 'create' AND object_ref.resource = 'pods' AND cardinality(pod_spec.added_capabilities) > 0
