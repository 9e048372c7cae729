-- macro: legitimate_rbac_write
-- description: An RBAC write the cluster makes for itself: the API server's
--    bootstrap policy, the aggregation controller's aggregated roles, the
--    namespace controller deleting a deleted namespace's roles and bindings, or
--    a managed platform's labelled add-on objects. Nothing else is trusted,
--    whoever makes it: RBAC changes by controller accounts are reported.
COALESCE(
  rbac_bootstrap_reconcile() OR role_aggregation_update() OR platform_managed_write()
  OR (namespace_cleanup() AND verb IN ('delete', 'deletecollection')),
  FALSE)
