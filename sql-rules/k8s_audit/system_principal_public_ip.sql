-- id: k8s.system_principal_public_ip
-- title: System identity used from a public IP address
-- severity: high
-- description: A request authenticated as a system identity (system:*, eks:*,
--    aks:*, service accounts included) succeeded from a public IPv4 address that
--    is neither private nor in the large AWS, Azure or GCP blocks. System
--    identities run inside the cluster or the cloud provider's control plane;
--    use from elsewhere suggests a stolen token or node credential. The client
--    address is the first sourceIP. The cloud blocks are a coarse built-in
--    approximation (no IP enrichment in the engine); IPv6 clients are not checked.
-- mitre: T1078.004, T1528, T1021.007
-- source: k8s_audit
-- tags: attack, initial_access, credential_access
-- author: Vigil
-- references: https://kubernetes.io/docs/concepts/security/rbac-good-practices/
-- based_on: panther:Kubernetes.System.Principal.PublicIP
SELECT
  user_info.username AS username,
  source_ips[1] AS source_ip,
  verb AS verb,
  object_ref.resource AS resource,
  object_ref.namespace AS namespace,
  request_uri AS uri,
  user_agent AS user_agent
FROM k8s_audit
WHERE regexp_like(COALESCE(user_info.username, ''), '^(system:|eks:|aks:)')
  AND user_info.username NOT IN ('system:anonymous', 'system:unauthenticated')
  AND COALESCE(stage, '') <> 'RequestReceived'
  AND COALESCE(response_status.code, 200) < 400
  -- a well-formed IPv4 address ...
  AND regexp_like(COALESCE(source_ips[1], ''), '^(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])){3}$')
  -- ... that is not private, loopback, link-local, CGNAT, multicast or reserved ...
  AND NOT regexp_like(source_ips[1], '^(0\.|10\.|127\.|169\.254\.|192\.168\.|172\.(1[6-9]|2[0-9]|3[01])\.|100\.(6[4-9]|[7-9][0-9]|1[01][0-9]|12[0-7])\.|(22[4-9]|2[3-5][0-9])\.)')
  -- ... nor in the main AWS / Azure / GCP address blocks
  AND NOT regexp_like(source_ips[1], '^((3|4|13|15|18|20|34|35|40|44|51|52|54)\.|8\.3[45]\.|23\.(9[6-9]|10[0-3])\.|50\.1[6-9]\.|99\.(7[7-9]|8[0-7])\.|104\.|107\.(167|178)\.|108\.59\.|130\.211\.|137\.11[67]\.|138\.91\.|146\.148\.|168\.6[1-3]\.|191\.23[2-9]\.)')
