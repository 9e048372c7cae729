-- id: k8s.serviceaccount_new_client
-- title: Service account used by a client it was not used by in 14 days
-- severity: high
-- description: A service account's token was used by a client program (the user
--    agent's product, such as kubectl, curl or a controller's binary) that had not
--    used it in the last 14 days. A workload always calls the API with the same
--    client; a token taken from a pod and replayed with kubectl, curl or an
--    attack tool, from inside the cluster or outside, is reported. A rollout
--    that changes a workload's client is reported once. Learns for 14 days of
--    event time before it alerts.
-- mitre: T1528, T1078.001
-- source: k8s_audit
-- tags: attack, credential_access, defense_evasion, first_seen
-- author: Vigil
-- references: https://attack.mitre.org/techniques/T1528/, https://kubernetes.io/docs/concepts/security/service-accounts/
-- based_on: vigil:first_seen
-- first_seen: username, client
-- history: 14d
SELECT
  user_info.username AS username,
  COALESCE(split_part(user_agent, '/', 1), '') AS client,
  user_agent AS user_agent,
  verb AS verb,
  request_uri AS uri,
  source_ips[1] AS source_ip
FROM k8s_audit
WHERE starts_with(user_info.username, 'system:serviceaccount:')
