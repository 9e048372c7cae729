-- macro: controller_creating_its_kind
-- description: A workload controller creating the kind of object it creates
--    (lookup table workload_controllers: the ReplicaSet controller pods, the
--    Deployment controller ReplicaSets, the CronJob controller Jobs), whatever
--    its owner. A cheap test, with no request body read: created_by_its_controller
--    checks the owner too, where the body is there to check it.
COALESCE(
  verb = 'create'
  AND lookup('workload_controllers', 'creates', user_info.username) = object_ref.resource,
  FALSE)
