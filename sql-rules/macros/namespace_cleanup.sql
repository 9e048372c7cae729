-- macro: namespace_cleanup
-- description: The namespace controller emptying a namespace that is being
--    deleted: it lists each kind of object there, and deletes them, one
--    namespace at a time.
COALESCE(
  user_info.username = 'system:serviceaccount:kube-system:namespace-controller'
  AND verb IN ('list', 'delete', 'deletecollection')
  AND object_ref.namespace IS NOT NULL,
  FALSE)
