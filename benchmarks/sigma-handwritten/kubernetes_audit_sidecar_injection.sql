-- id: hand.ad9012a6-e518-4432-9890-f3b82b8fc71f
-- title: Potential Sidecar Injection Into Running Deployment
-- severity: medium
-- description: Detects attempts to inject a sidecar container into a running
--    deployment. A sidecar container is an additional container within a pod,
--    that resides alongside the main container. One way to add containers to
--    running resources like Deployments/DeamonSets/StatefulSets, is via a
--    "kubectl patch" operation. By injecting a new container within a
--    legitimate pod, an attacker can run their code and hide their activity,
--    instead of running their own separated pod in the cluster. False
--    positives: Unknown.
-- mitre: T1609
-- source: k8s_audit
-- tags: handwritten, attack.execution
-- author: Leo Tsaousis (@laripping)
-- references: https://kubernetes.io/docs/tasks/manage-kubernetes-objects/update-api-object-kubectl-patch, https://microsoft.github.io/Threat-Matrix-for-Kubernetes/techniques/Sidecar%20Injection/
-- based_on: sigma:ad9012a6-e518-4432-9890-f3b82b8fc71f
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
WHERE verb = 'patch' AND object_ref.api_group = 'apps' AND object_ref.resource = 'deployments'
