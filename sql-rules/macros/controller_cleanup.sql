-- macro: controller_cleanup
-- description: One of the cleanup_controllers deleting the pods and workload
--    objects it manages (scale-downs, rollouts, finished Jobs, the dependents
--    of a deleted owner, a deleted namespace's contents, evictions).
COALESCE(
  in_list(user_info.username, 'cleanup_controllers')
  AND verb IN ('delete', 'deletecollection'),
  FALSE)
