-- macro: role_aggregation_update
-- description: The ClusterRole aggregation controller filling in an
--    aggregated ClusterRole (admin, edit, view, or one of yours): an update or
--    patch of a ClusterRole whose body carries an aggregationRule.
COALESCE(
  user_info.username = 'system:serviceaccount:kube-system:clusterrole-aggregation-controller'
  AND object_ref.resource = 'clusterroles'
  AND verb IN ('update', 'patch')
  AND json_get_json(request_object, 'aggregationRule') IS NOT NULL,
  FALSE)
