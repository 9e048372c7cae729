-- id: k8s.anonymous_access
-- title: Anonymous API request allowed
-- severity: medium
-- description: The API server accepted a request from an unauthenticated client
--    (system:anonymous or the system:unauthenticated group). Anonymous access
--    should be limited to health and discovery endpoints; anything else means an
--    RBAC binding grants rights to everyone who can reach the API server. Health
--    probes are ignored (health_probe: a health path, a load-balancer or kubelet
--    probe, or the control-plane host itself, asking for no resource);
--    anonymous access to a resource is reported from any address.
-- mitre: T1190, T1078.001
-- source: k8s_audit
-- tags: attack, initial_access
-- author: Vigil
-- references: https://raesene.github.io/blog/2023/03/18/lets-talk-about-anonymous-access-to-Kubernetes/
-- based_on: panther:Kubernetes.API.AnonymousAccess, falco:Anonymous Request Allowed, sigma:kubernetes_audit_unauthorized_unauthenticated_actions
SELECT
  user_info.username AS username,
  verb AS verb,
  request_uri AS uri,
  object_ref.resource AS resource,
  object_ref.namespace AS namespace,
  source_ips[1] AS source_ip,
  user_agent AS user_agent,
  annotations['authorization.k8s.io/reason'] AS reason
FROM k8s_audit
WHERE anonymous_request()
  AND COALESCE(stage, '') <> 'RequestReceived'
  AND (annotations['authorization.k8s.io/decision'] = 'allow'
       OR response_status.code BETWEEN 200 AND 399)
  AND NOT health_probe()
