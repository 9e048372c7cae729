-- id: k8s.offensive_tool_user_agent
-- title: API request from a Kubernetes offensive or scanning tool
-- severity: high
-- description: The API server received a request whose User-Agent names a known
--    Kubernetes attack, enumeration or secret-scanning tool
--    (offensive_tool_user_agents: Peirates, kube-hunter, Rakkess/access-matrix,
--    TruffleHog, AzureHound, MicroScanner, kubiscan, kdigger, CDK, Stratus Red
--    Team, kubeletctl, kubesploit). Failed requests are
--    reported too: probing is the signal.
-- mitre: T1613, T1046, T1552.007
-- source: k8s_audit
-- tags: attack, discovery
-- author: Vigil
-- references: https://github.com/inguardians/peirates, https://github.com/aquasecurity/kube-hunter
-- based_on: sigma:kubernetes_audit_potential_enumeration_activity
SELECT
  user_info.username AS username,
  user_agent AS user_agent,
  verb AS verb,
  request_uri AS uri,
  response_status.code AS code,
  source_ips[1] AS source_ip
FROM k8s_audit
WHERE COALESCE(stage, '') <> 'RequestReceived'
  AND in_list(lower(user_agent), 'offensive_tool_user_agents')
