-- id: k8s.node_credential_multiple_addresses
-- title: Node credential used from several addresses
-- severity: medium
-- description: One node identity (system:node:<name>) made requests from at
--    least two different client addresses (first sourceIP) within one
--    5-minute window (tumbling, epoch-aligned). A kubelet talks to the API
--    server from its node's one address, every few seconds (lease renewals,
--    status), so any window in which its credential is used from another
--    machine also holds the kubelet's own requests: tumbling windows miss no
--    pair, whatever user agent the thief sends. If your API server
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
-- window: 5m
-- suppress: 1h
-- suppress_key: username
SELECT
  user_info.username AS username,
  -- two of the addresses: the lowest and the highest (min and max keep the
  -- state to two strings per node and window, where a distinct count would
  -- keep a set)
  min(source_ips[1]) AS address,
  max(source_ips[1]) AS other_address,
  tumble_end(event_time, INTERVAL '5 minutes') AS window_end
FROM k8s_audit
WHERE starts_with(user_info.username, 'system:node:')
  AND final_record()
  AND source_ips[1] IS NOT NULL
GROUP BY user_info.username, tumble_end(event_time, INTERVAL '5 minutes')
HAVING min(source_ips[1]) < max(source_ips[1])
