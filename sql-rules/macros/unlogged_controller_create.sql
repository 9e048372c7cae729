-- macro: unlogged_controller_create
-- description: A workload controller created the kind of object it creates
--    (pods, ReplicaSets, Jobs), and the audit policy did not log the request
--    body (Metadata level), so its owner and images cannot be checked. Only
--    pod_system_namespace uses it: the other pod rules need the body anyway.
COALESCE(request_object IS NULL AND controller_creating_its_kind(), FALSE)
