-- id: hand.a80d927d-ac6e-443f-a867-e8d6e3897318
-- title: Creation Of Pod In System Namespace
-- severity: medium
-- description: Detects deployments of pods within the kube-system namespace,
--    which could be intended to imitate system pods. System pods, created by
--    controllers such as Deployments or DaemonSets have random suffixes in
--    their names. Attackers can use this fact and name their backdoor pods as
--    if they were created by these controllers to avoid detection. Deployment
--    of such a backdoor container e.g. named kube-proxy-bv61v, could be
--    attempted in the kube-system namespace alongside the other
--    administrative containers. False positives: System components such as
--    daemon-set-controller and kube-scheduler also create pods in the
--    kube-system namespace.
-- mitre: T1036.005
-- source: k8s_audit
-- tags: handwritten, attack.stealth
-- author: Leo Tsaousis (@laripping)
-- references: https://microsoft.github.io/Threat-Matrix-for-Kubernetes/techniques/Pod%20or%20container%20name%20similarily/
-- based_on: sigma:a80d927d-ac6e-443f-a867-e8d6e3897318
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
WHERE verb = 'create' AND object_ref.resource = 'pods' AND object_ref.namespace = 'kube-system'
