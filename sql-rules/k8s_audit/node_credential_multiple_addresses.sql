-- id: k8s.node_credential_multiple_addresses
-- title: Node credential used from several addresses
-- severity: medium
-- description: One node identity (system:node:<name>) made requests from at
--    least two different client addresses (first sourceIP) within 10 minutes
--    (hopping windows every 2 minutes). A kubelet talks to the API server from
--    its node's one address; a second address is its credential used from
--    another machine, whatever user agent the thief sends. If your API server
--    sits behind a load balancer that does not preserve client addresses, the
--    sourceIPs are the balancer's and this rule is noise there: disable it in
--    your overlay (overrides.toml). Suppressed for 1 hour per identity.
-- mitre: T1552.001, T1078.004, T1550.001
-- source: k8s_audit
-- tags: attack, credential_access, lateral_movement, stolen_credentials
-- author: Vigil
-- references: https://kubernetes.io/docs/reference/access-authn-authz/node/
-- based_on: vigil:node_credential_multiple_addresses, mitre:T1078.004
-- mode: correlation
-- window: 10m
-- suppress: 1h
-- suppress_key: username
SELECT
  user_info.username AS username,
  count(DISTINCT source_ips[1]) AS addresses,
  array_agg(DISTINCT source_ips[1]) AS source_ips,
  array_agg(DISTINCT user_agent) AS user_agents,
  count(*) AS requests,
  window_end
FROM (
  SELECT *, unnest(hop_ends(event_time, INTERVAL '10 minutes', INTERVAL '2 minutes')) AS window_end
  FROM k8s_audit
  WHERE starts_with(user_info.username, 'system:node:')
    AND final_record()
    AND source_ips[1] IS NOT NULL
) s
GROUP BY user_info.username, window_end
HAVING count(DISTINCT source_ips[1]) >= 2
