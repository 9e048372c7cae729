-- macro: mirror_pod_of_own_node
-- description: A kubelet created the mirror pod of one of its own static pods
--    (a pod owned by the kubelet's own Node object). The static pod runs
--    from a manifest on the node whatever the API server says; the mirror
--    only makes it visible.
COALESCE(
  verb = 'create'
  AND object_ref.resource = 'pods'
  AND owner_kind() = 'Node'
  AND user_info.username = 'system:node:' || owner_name(),
  FALSE)
