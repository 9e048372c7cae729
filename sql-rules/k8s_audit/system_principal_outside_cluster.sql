-- id: k8s.system_principal_outside_cluster
-- title: System identity used from outside the cluster's networks
-- severity: high
-- description: A request authenticated as an identity that lives in the cluster
--    or its control plane (cluster_identities: service accounts, nodes,
--    control-plane components, eks:*/aks:* platform components) succeeded from
--    an address outside the cluster's networks (cluster_networks) and outside
--    the cloud providers' blocks a managed control plane calls from
--    (provider_networks). Those identities run inside the cluster: used from
--    elsewhere, a service-account token (TokenRequest-minted or read from a
--    pod) or a node's credential has been stolen. The default cluster_networks
--    is every private range, and provider_networks stands in for the egress
--    addresses of nodes in public subnets: set cluster_networks to your node,
--    pod and NAT egress ranges and empty provider_networks in your overlay to
--    catch an identity used from any other machine, a rented cloud VM
--    included. The client address is the first sourceIP; an unparseable one is
--    not judged.
-- mitre: T1078.004, T1528, T1550.001
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
WHERE in_list(user_info.username, 'cluster_identities')
  AND NOT anonymous_request()
  AND request_succeeded()
  AND NOT cidr_contains(list('cluster_networks'), source_ips[1])
  AND NOT cidr_contains(list('provider_networks'), source_ips[1])
