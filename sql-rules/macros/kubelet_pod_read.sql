-- macro: kubelet_pod_read
-- description: A kubelet reading, with success, a secret or config map in a
--    namespace: what it does for the pods of its node, and all the Node
--    authorizer lets it read. A node's refused reads are not this.
COALESCE(
  starts_with(user_info.username, 'system:node:')
  AND verb IN ('get', 'list', 'watch')
  AND object_ref.namespace IS NOT NULL
  AND COALESCE(response_status.code, 200) < 400,
  FALSE)
