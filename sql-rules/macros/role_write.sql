-- macro: role_write
-- description: A Role or ClusterRole was created, updated or patched, and the
--    request succeeded. Changing an existing role grants as much as creating one.
COALESCE(
  object_ref.resource IN ('roles', 'clusterroles')
  AND verb IN ('create', 'update', 'patch')
  AND request_succeeded(),
  FALSE)
