-- macro: own_namespace_read
-- description: A service account reading in its own namespace: what
--    applications and operators do with the secrets and config maps deployed
--    beside them.
COALESCE(
  starts_with(user_info.username, 'system:serviceaccount:' || COALESCE(object_ref.namespace, '') || ':')
  AND object_ref.namespace IS NOT NULL,
  FALSE)
