-- id: k8s.anonymous_access
-- title: Anonymous API request allowed
-- severity: medium
-- description: The API server accepted a request from an unauthenticated client
--    (system:anonymous or the system:unauthenticated group). Anonymous access
--    should be limited to health and discovery endpoints; anything else means an
--    RBAC binding grants rights to everyone who can reach the API server. Health
--    probes (/healthz, /livez, /readyz, load-balancer and kube-probe checks) and
--    loopback clients are ignored.
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
WHERE (user_info.username IN ('system:anonymous', 'system:unauthenticated')
       OR array_has(COALESCE(user_info.groups, make_array('')), 'system:unauthenticated'))
  AND COALESCE(stage, '') <> 'RequestReceived'
  AND (annotations['authorization.k8s.io/decision'] = 'allow'
       OR response_status.code BETWEEN 200 AND 399)
  AND NOT regexp_like(COALESCE(request_uri, ''), '^/(healthz|livez|readyz)([/?].*)?$')
  AND NOT regexp_like(COALESCE(user_agent, ''), '^(ELB-HealthChecker|kube-probe|GoogleHC|Azure Traffic Manager)')
  AND NOT regexp_like(COALESCE(source_ips[1], ''), '^(127\.|::1$)')
