-- macro: rbac_bootstrap_reconcile
-- description: The API server reconciling its built-in RBAC policy at start:
--    system:apiserver writing a role or binding labelled
--    kubernetes.io/bootstrapping=rbac-defaults.
COALESCE(
  user_info.username = 'system:apiserver'
  AND object_ref.resource IN ('roles', 'clusterroles', 'rolebindings', 'clusterrolebindings')
  AND json_get_str(request_object, 'metadata', 'labels', 'kubernetes.io/bootstrapping') = 'rbac-defaults',
  FALSE)
