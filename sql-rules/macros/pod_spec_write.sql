-- macro: pod_spec_write
-- description: A create, update or patch that carries a pod spec: a pod, a
--    workload with a pod template, or an ephemeral container (pod_spec is
--    decoded for exactly these, when the request body is logged).
COALESCE(
  pod_spec IS NOT NULL
  AND verb IN ('create', 'update', 'patch'),
  FALSE)
