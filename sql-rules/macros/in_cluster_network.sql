-- macro: in_cluster_network
-- description: The client address (first sourceIP) is in the cluster's own
--    networks (cluster_networks).
COALESCE(cidr_contains(list('cluster_networks'), source_ips[1]), FALSE)
