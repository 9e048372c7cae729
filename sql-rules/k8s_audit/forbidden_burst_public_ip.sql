-- id: k8s.forbidden_burst_public_ip
-- title: Burst of forbidden (403) API responses for one user from a public IP
-- severity: medium
-- description: One identity received at least 10 forbidden (403) responses from
--    the API server within one minute (tumbling, epoch-aligned windows), on
--    requests whose client address (first sourceIP) is a public IP. Repeated
--    denials are what permission enumeration (rakkess, kubectl auth can-i
--    loops), token spraying and misconfigured clients look like; from outside
--    the cluster's own networks they are worth a look. Private, loopback,
--    link-local, CGNAT and multicast IPv4 addresses and loopback, unique-local
--    and link-local IPv6 addresses are excluded, as in the Panther rule.
--    Panther keys its threshold by source IP; this rule keys by user and lists
--    the source IPs. Only final (ResponseComplete) records are counted, so one
--    request is one denial. Suppressed for 30 minutes per user (Panther's
--    dedup period): an ongoing scan gives one alert and one summary.
-- mitre: T1613, T1069.003, T1110
-- source: k8s_audit
-- tags: attack, discovery, correlation
-- author: Vigil
-- references: https://aws.github.io/aws-eks-best-practices/security/docs/detective/
-- based_on: panther:Kubernetes.API.Multiple403.PublicIP, sigma:kubernetes_audit_unauthorized_unauthenticated_actions
-- mode: correlation
-- window: 1m
-- suppress: 30m
-- suppress_key: username
SELECT
  COALESCE(user_info.username, '') AS username,
  count(*) AS forbidden,
  array_agg(DISTINCT source_ips[1]) AS source_ips,
  array_agg(DISTINCT object_ref.resource) AS resources,
  array_agg(DISTINCT verb) AS verbs,
  min(event_time) AS first_seen,
  tumble_end(event_time, INTERVAL '1 minute') AS window_end
FROM k8s_audit
WHERE response_status.code = 403
  AND COALESCE(stage, 'ResponseComplete') = 'ResponseComplete'
  AND (
    -- a public IPv4 address: well-formed ...
    (regexp_like(COALESCE(source_ips[1], ''), '^(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])){3}$')
     -- ... and not private, loopback, link-local, CGNAT, multicast or reserved
     AND NOT regexp_like(source_ips[1], '^(0\.|10\.|127\.|169\.254\.|192\.168\.|172\.(1[6-9]|2[0-9]|3[01])\.|100\.(6[4-9]|[7-9][0-9]|1[01][0-9]|12[0-7])\.|(22[4-9]|2[3-5][0-9])\.)'))
    -- or a global IPv6 address (not loopback, unique-local fc00::/7, link-local fe80::/10)
    OR (strpos(COALESCE(source_ips[1], ''), ':') > 0
        AND NOT regexp_like(lower(source_ips[1]), '^(::1?$|f[cd][0-9a-f]{0,2}:|fe[89ab][0-9a-f]?:)'))
  )
GROUP BY COALESCE(user_info.username, ''), tumble_end(event_time, INTERVAL '1 minute')
HAVING count(*) >= 10
