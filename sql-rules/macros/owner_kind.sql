-- macro: owner_kind
-- description: The kind of the object's owner (its first ownerReference in
--    the request body): ReplicaSet for a Deployment's pod, Deployment for its
--    ReplicaSet, DaemonSet, Job, Node for a kubelet's mirror pod; NULL when
--    the object has no owner or the body is not logged.
json_get_str(request_object, 'metadata', 'ownerReferences', 0, 'kind')
