-- id: k8s.rbac_change_then_workload
-- title: Privileged role binding followed by a workload change by the same user
-- severity: high
-- description: A user created or changed a RoleBinding or ClusterRoleBinding
--    that grants a powerful role (cluster-admin, admin, edit, system:masters,
--    a control-plane role) or grants any role to everyone (the groups
--    system:authenticated, system:unauthenticated, system:serviceaccounts, or
--    system:anonymous), and within the next 5 minutes created or changed a
--    workload (pod, deployment, daemonset, statefulset, replicaset, job,
--    cronjob) with the same identity: escalate, then use the new rights to
--    run code (often a pod running as the newly bound service account).
--    Both requests must have succeeded. Every identity counts, system accounts
--    included; binding changes the cluster makes for itself
--    (legitimate_rbac_write) and the objects workload controllers create
--    (controller_creating_its_kind) are not.
--    The role is read from the binding's requestObject (or responseObject for
--    patches), so the audit policy must log rbac.authorization.k8s.io at
--    Request level or above: with Metadata-only audit logs this rule cannot
--    fire (ordinary Helm installs bind chart-specific roles and then create
--    deployments; binding any role would make this rule fire on every install).
--    One alert per workload change, emitted at it, naming it and the user's
--    qualifying binding changes of the 5 minutes before; suppressed for 10
--    minutes per user. Written as a join of the workload changes with the
--    same user's binding changes of the 5 minutes before (a hash join on the
--    user, the few bindings as its build side): the window-function form of
--    this sequence recomputed its array_agg(DISTINCT) frames for every
--    retained workload change at every evaluation (see docs/benchmarks.md).
-- mitre: T1098, T1078.004, T1610
-- source: k8s_audit
-- tags: attack, privilege_escalation, execution, correlation
-- author: Vigil
-- references: https://kubernetes.io/docs/concepts/security/rbac-good-practices/#privilege-escalation-risks
-- based_on: sigma:kubernetes_audit_rolebinding_modification, falco:Attach to cluster-admin Role, falco:K8s RoleBinding Created, falco:K8s Deployment Created
-- mode: correlation
-- window: 5m
-- suppress: 10m
-- suppress_key: username
SELECT
  w.username AS username,
  array_distinct(array_agg(b.binding)) AS bindings,
  array_distinct(array_agg(b.role)) AS roles,
  min(b.event_time) AS binding_time,
  w.verb AS workload_verb,
  w.resource AS workload_resource,
  w.namespace AS workload_namespace,
  w.workload AS workload,
  w.event_time AS window_end
FROM (
  SELECT __row, event_time, user_info.username AS username, verb,
    object_ref.resource AS resource, object_ref.namespace AS namespace,
    object_name() AS workload
  FROM k8s_audit
  WHERE user_info.username IS NOT NULL
    AND request_succeeded()
    AND verb IN ('create', 'update', 'patch')
    AND in_list(object_ref.resource, 'workload_resources')
    AND object_ref.subresource IS NULL
    -- a controller creating the kind it creates is not using new rights
    -- (and controllers bind no roles: k8s.system_account_rbac_change)
    AND NOT controller_creating_its_kind()
) w
JOIN (
  SELECT __row, event_time, user_info.username AS username,
    concat(object_ref.resource, ' ', COALESCE(object_ref.namespace, ''), '/',
           COALESCE(object_name(), '')) AS binding,
    bound_role() AS role
  FROM k8s_audit
  WHERE user_info.username IS NOT NULL
    AND request_succeeded()
    AND verb IN ('create', 'update', 'patch')
    AND object_ref.resource IN ('rolebindings', 'clusterrolebindings')
    AND (in_list(bound_role(), 'privileged_cluster_roles')
         OR bound_role() = 'edit'
         OR any_in_list(json_path_values(COALESCE(request_object, response_object), '$.subjects[*].name'), 'everyone_groups'))
    AND NOT legitimate_rbac_write()
) b
  ON b.username = w.username
 AND b.event_time <= w.event_time
 AND b.event_time >= w.event_time - INTERVAL '5 minutes'
GROUP BY w.__row, w.username, w.verb, w.resource, w.namespace, w.workload, w.event_time
HAVING min(b.event_time) < w.event_time
