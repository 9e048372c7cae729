-- id: site.payments_secret_read
-- title: Secret in a PCI namespace read by someone outside its team
-- severity: high
-- description: A secret of a namespace in payments_namespaces was read by an
--    identity that does not own it (own_namespace_read), the owning team named
--    from the namespace_owners lookup table.
-- mitre: T1552.007
-- source: k8s_audit
-- author: Example Corp security
-- based_on: vigil:secret_read
SELECT
  user_info.username AS username,
  object_ref.namespace AS namespace,
  object_ref.name AS secret,
  lookup('namespace_owners', 'team', object_ref.namespace) AS owning_team,
  lookup('namespace_owners', 'channel', object_ref.namespace) AS channel
FROM k8s_audit
WHERE secret_read()
  AND COALESCE(response_status.code, 200) < 400
  AND in_list(object_ref.namespace, 'payments_namespaces')
  AND NOT own_namespace_read()
