-- macro: pod_session
-- description: A request that opens a session in a running container:
--    kubectl exec or attach (create, or get over WebSockets).
COALESCE(
  object_ref.resource = 'pods'
  AND object_ref.subresource IN ('exec', 'attach')
  AND verb IN ('create', 'get'),
  FALSE)
