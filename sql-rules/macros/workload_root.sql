-- macro: workload_root
-- description: The workload an object belongs to, as namespace/Kind/name:
--    a pod of a Deployment's ReplicaSet, that ReplicaSet and the Deployment
--    itself all give namespace/Deployment/<name> (a ReplicaSet's name is its
--    Deployment's plus "-" and the pod-template hash); a CronJob's Jobs and
--    their pods give namespace/CronJob/<name> (a Job's name is the CronJob's
--    plus "-" and the scheduled minute); other owned objects give their
--    owner; an object without an owner gives itself. Rules fold the alerts
--    of one workload on it (suppress_key), so a workload and the pods its
--    controllers create raise one alert, without excluding the controllers.
concat(
  COALESCE(object_ref.namespace, json_get_str(request_object, 'metadata', 'namespace'), ''), '/',
  CASE
    WHEN owner_kind() = 'ReplicaSet' AND regexp_like(owner_name(), '-[bcdfghjklmnpqrstvwxz2456789]{1,10}$')
      THEN 'Deployment/' || regexp_replace(owner_name(), '-[bcdfghjklmnpqrstvwxz2456789]{1,10}$', '')
    WHEN owner_kind() = 'Job' AND regexp_like(owner_name(), '-[0-9]{8,}$')
      THEN 'CronJob/' || regexp_replace(owner_name(), '-[0-9]{8,}$', '')
    WHEN owner_kind() IS NOT NULL
      THEN owner_kind() || '/' || COALESCE(owner_name(), '')
    ELSE COALESCE(lookup('workload_kinds', 'kind', object_ref.resource), object_ref.resource, '') || '/'
      || COALESCE(object_name(), json_get_str(request_object, 'metadata', 'generateName'), '')
  END)
