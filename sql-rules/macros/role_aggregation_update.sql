-- macro: role_aggregation_update
-- description: The ClusterRole aggregation controller filling in an
--    aggregated ClusterRole: an update or patch of a ClusterRole whose body
--    carries an aggregationRule, or, when the audit policy logs no bodies, of
--    one of the built-in aggregated roles (aggregated_cluster_roles). Rules an
--    attacker adds to an aggregated role are overwritten by the next
--    aggregation; a role without an aggregationRule changed with this
--    controller's token is an escalation and is not this.
COALESCE(
  user_info.username = 'system:serviceaccount:kube-system:clusterrole-aggregation-controller'
  AND object_ref.resource = 'clusterroles'
  AND verb IN ('update', 'patch')
  AND (json_get_json(request_object, 'aggregationRule') IS NOT NULL
       OR (request_object IS NULL AND in_list(object_ref.name, 'aggregated_cluster_roles'))),
  FALSE)
