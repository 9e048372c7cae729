-- id: k8s.unauthenticated_request_burst
-- title: Burst of anonymous or failed-authentication requests from one address
-- severity: medium
-- description: One client address (first sourceIP) sent at least 20 requests
--    within one minute (hopping windows of 1 minute, every 20 seconds) that
--    were either anonymous (system:anonymous, or the system:unauthenticated
--    group; allowed or denied) or rejected as unauthenticated (401: bad or
--    expired token, wrong client certificate). That is an unauthenticated scan
--    of the API server, or credential stuffing / token spraying. Health and
--    readiness probes (/healthz, /livez, /readyz, /version, and load-balancer
--    and kube-probe user agents) and loopback clients are ignored: they are
--    anonymous by design (the benign background data has 262 such probes in
--    4 minutes). Requests without a sourceIP are grouped under an empty
--    address. Only final (ResponseComplete) records are counted. Suppressed
--    for 30 minutes per address.
-- mitre: T1110, T1046, T1190
-- source: k8s_audit
-- tags: attack, credential_access, discovery, correlation
-- author: Vigil
-- references: https://raesene.github.io/blog/2023/03/18/lets-talk-about-anonymous-access-to-Kubernetes/
-- based_on: sigma:kubernetes_audit_unauthorized_unauthenticated_actions, falco:Anonymous Request Allowed
-- mode: correlation
-- window: 1m
-- suppress: 30m
-- suppress_key: source_ip
SELECT
  COALESCE(source_ips[1], '') AS source_ip,
  count(*) AS requests,
  count(*) FILTER (WHERE response_status.code = 401) AS unauthenticated,
  array_agg(DISTINCT COALESCE(user_info.username, '')) AS usernames,
  array_agg(DISTINCT regexp_replace(COALESCE(request_uri, ''), '[?].*$', '')) AS paths,
  array_agg(DISTINCT user_agent) AS user_agents,
  window_end
FROM (
  SELECT *, unnest(hop_ends(event_time, INTERVAL '1 minute', INTERVAL '20 seconds')) AS window_end
  FROM k8s_audit
  WHERE (anonymous_request() OR response_status.code = 401)
    AND COALESCE(stage, 'ResponseComplete') = 'ResponseComplete'
    AND NOT health_probe()
) s
GROUP BY COALESCE(source_ips[1], ''), window_end
HAVING count(*) >= 20
