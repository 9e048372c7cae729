-- macro: created_by_its_controller
-- description: A workload controller created an object for the workload
--    that owns it: the ReplicaSet controller a pod owned by a ReplicaSet,
--    the Deployment controller a ReplicaSet owned by a Deployment, and so on
--    (lookup table workload_controllers, keyed by the controller's identity),
--    or kube-controller-manager itself when it runs without per-controller
--    credentials. The owner is read from the request body; without a body
--    (Metadata audit level) this is false.
COALESCE(
  verb = 'create'
  AND owner_kind() IS NOT NULL
  AND ((lookup('workload_controllers', 'owner_kind', user_info.username) = owner_kind()
        AND lookup('workload_controllers', 'creates', user_info.username) = object_ref.resource)
       OR (user_info.username = 'system:kube-controller-manager'
           AND object_ref.resource IN ('pods', 'replicasets', 'jobs'))),
  FALSE)
