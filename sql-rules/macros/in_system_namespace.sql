-- macro: in_system_namespace
-- description: The request is about an object in one of the
--    system_namespaces (kube-system, kube-public, kube-node-lease, and
--    GKE's own).
COALESCE(
  in_list(object_ref.namespace, 'system_namespaces'),
  FALSE)
