-- id: k8s.forbidden_burst_public_ip
-- title: Burst of forbidden (403) API responses for one user from a public IP
-- severity: medium
-- description: One identity received at least 10 forbidden (403) responses from
--    the API server within one minute (tumbling, epoch-aligned windows), on
--    requests whose client address (first sourceIP) is a public IP. Repeated
--    denials are what permission enumeration (rakkess, kubectl auth can-i
--    loops), token spraying and misconfigured clients look like; from outside
--    the cluster's own networks they are worth a look. The address must be
--    public (ip_is_public: not private, shared, loopback, link-local, reserved,
--    documentation or multicast), as in the Panther rule.
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
  AND ip_is_public(source_ips[1])
GROUP BY COALESCE(user_info.username, ''), tumble_end(event_time, INTERVAL '1 minute')
HAVING count(*) >= 10
