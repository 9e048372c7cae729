-- The six per-event rules of SIX_RULES in scripts/bench-peers.sh (sql-rules/k8s_audit/), ported to DuckDB SQL
-- over the raw Kubernetes audit JSON lines. duckdb_run.py replaces {input}
-- with the (quoted) input path and prints one row: the matches of each rule.
--
-- One scan does the whole job, as `vigil replay` does: read the file, parse
-- the columns the rules need, evaluate the six rules, count the matches.
--
-- Each Vigil macro is one column of `e`, named as the macro, and wrapped in
-- COALESCE(..., FALSE) as Vigil's macro files are, so that `NOT macro` holds
-- when a field is missing. Vigil's lists are spelled out inline; glob lists
-- use GLOB, whose `*` and `?` mean what they mean in Vigil's globs.
WITH raw AS (
  SELECT *
  FROM read_ndjson({input}, columns = {
    stage: 'VARCHAR',
    verb: 'VARCHAR',
    requestURI: 'VARCHAR',
    userAgent: 'VARCHAR',
    sourceIPs: 'VARCHAR[]',
    "user": 'STRUCT(username VARCHAR, groups VARCHAR[])',
    objectRef: 'STRUCT(resource VARCHAR, namespace VARCHAR, name VARCHAR, subresource VARCHAR)',
    responseStatus: 'STRUCT(code INTEGER)',
    annotations: 'MAP(VARCHAR, VARCHAR)',
    requestObject: 'JSON',
    responseObject: 'JSON'
  })
),
e AS (
  SELECT
    stage, verb, requestURI, userAgent, annotations, requestObject,
    "user".username AS username,
    objectRef.resource AS resource,
    objectRef.namespace AS namespace,
    objectRef.subresource AS subresource,
    responseStatus.code AS code,
    -- request_succeeded
    COALESCE(COALESCE(stage, '') <> 'RequestReceived'
             AND COALESCE(responseStatus.code, 200) < 400, FALSE) AS request_succeeded,
    -- anonymous_request (anonymous_users list)
    COALESCE("user".username IN ('system:anonymous', 'system:unauthenticated')
             OR list_contains(COALESCE("user".groups, ['']), 'system:unauthenticated'),
             FALSE) AS anonymous_request,
    -- health_probe (health_check_paths, health_check_user_agents lists;
    -- cidr_contains(127.0.0.0/8, ::1/128) written on the address text, as
    -- DuckDB's inet extension would have to be downloaded)
    COALESCE(objectRef.resource IS NULL
             AND (len(list_filter(['/healthz', '/healthz/*', '/healthz?*', '/livez', '/livez/*',
                                   '/livez?*', '/readyz', '/readyz/*', '/readyz?*', '/version',
                                   '/version?*'], lambda p: requestURI GLOB p)) > 0
                  OR len(list_filter(['ELB-HealthChecker*', 'kube-probe*', 'GoogleHC*',
                                      'Azure Traffic Manager*'], lambda p: userAgent GLOB p)) > 0
                  OR regexp_full_match(sourceIPs[1], '127\.\d{1,3}\.\d{1,3}\.\d{1,3}')
                  OR sourceIPs[1] = '::1'),
             FALSE) AS health_probe,
    -- pod_session
    COALESCE(objectRef.resource = 'pods'
             AND objectRef.subresource IN ('exec', 'attach')
             AND verb IN ('create', 'get'), FALSE) AS pod_session,
    -- secret_read (with final_record and helm_release_secret)
    COALESCE(objectRef.resource = 'secrets'
             AND verb IN ('get', 'list', 'watch')
             AND COALESCE(stage, '') NOT IN ('RequestReceived', 'ResponseStarted')
             AND NOT COALESCE(starts_with(COALESCE(objectRef.name, ''), 'sh.helm.release.v1.')
                              OR regexp_matches(COALESCE(requestURI, ''), 'labelSelector=[^&]*owner%3Dhelm'),
                              FALSE),
             FALSE) AS secret_read,
    -- own_namespace_read
    COALESCE(starts_with("user".username,
                         'system:serviceaccount:' || COALESCE(objectRef.namespace, '') || ':')
             AND objectRef.namespace IS NOT NULL, FALSE) AS own_namespace_read,
    -- kubelet_pod_read
    COALESCE(starts_with("user".username, 'system:node:')
             AND verb IN ('get', 'list', 'watch')
             AND objectRef.namespace IS NOT NULL
             AND COALESCE(responseStatus.code, 200) < 400, FALSE) AS kubelet_pod_read,
    -- namespace_cleanup
    COALESCE("user".username = 'system:serviceaccount:kube-system:namespace-controller'
             AND verb IN ('list', 'delete', 'deletecollection')
             AND objectRef.namespace IS NOT NULL, FALSE) AS namespace_cleanup,
    -- bound_role
    COALESCE(json_extract_string(requestObject, '$.roleRef.name'),
             json_extract_string(responseObject, '$.roleRef.name')) AS bound_role,
    -- legitimate_rbac_write, the parts that can hold for a create, update or
    -- patch of a clusterrolebinding: rbac_bootstrap_reconcile OR
    -- platform_managed_write (role_aggregation_update is about clusterroles,
    -- namespace_cleanup's part about deletes)
    COALESCE(("user".username = 'system:apiserver'
              AND json_extract_string(requestObject, '$.metadata.labels."kubernetes.io/bootstrapping"') = 'rbac-defaults')
             OR ("user".username IN ('eks:addon-manager', 'eks:node-manager', 'eks:cloud-controller-manager',
                                     'eks:vpc-resource-controller', 'aksService', 'system:addon-manager')
                 AND list_has_any(json_keys(requestObject, '$.metadata.labels'),
                                  ['addonmanager.kubernetes.io/mode', 'eks.amazonaws.com/component',
                                   'kubernetes.azure.com/managedby', 'components.gke.io/component-name'])),
             FALSE) AS legitimate_rbac_write
  FROM raw
)
SELECT
  -- k8s.anonymous_access
  count(*) FILTER (WHERE anonymous_request
                     AND COALESCE(stage, '') <> 'RequestReceived'
                     AND (annotations['authorization.k8s.io/decision'] = 'allow'
                          OR code BETWEEN 200 AND 399)
                     AND NOT health_probe) AS "k8s.anonymous_access",
  -- k8s.clusterrolebinding_privileged (privileged_cluster_roles list)
  count(*) FILTER (WHERE resource = 'clusterrolebindings'
                     AND verb IN ('create', 'update', 'patch')
                     AND request_succeeded
                     AND bound_role IN ('cluster-admin', 'admin', 'system:masters',
                                        'system:kube-controller-manager', 'system:kube-scheduler',
                                        'system:node', 'system:controller:clusterrole-aggregation-controller')
                     AND NOT legitimate_rbac_write) AS "k8s.clusterrolebinding_privileged",
  -- k8s.events_deleted
  count(*) FILTER (WHERE resource = 'events'
                     AND verb IN ('delete', 'deletecollection')
                     AND request_succeeded
                     AND NOT namespace_cleanup) AS "k8s.events_deleted",
  -- k8s.offensive_tool_user_agent (offensive_tool_user_agents list)
  count(*) FILTER (WHERE COALESCE(stage, '') <> 'RequestReceived'
                     AND len(list_filter(['*peirates*', '*kube-hunter*', '*kubehunter*', '*access_matrix*',
                                          '*rakkess*', '*trufflehog*', '*azurehound*', '*micro-scanner*',
                                          '*kubiscan*', '*kdigger*', '*cdk/*', '*stratus-red-team*',
                                          '*kubeletctl*', '*kubesploit*'],
                                         lambda p: lower(userAgent) GLOB p)) > 0) AS "k8s.offensive_tool_user_agent",
  -- k8s.pod_exec
  count(*) FILTER (WHERE pod_session AND request_succeeded) AS "k8s.pod_exec",
  -- k8s.secret_read
  count(*) FILTER (WHERE secret_read
                     AND COALESCE(code, 200) < 400
                     AND namespace IS NOT NULL
                     AND NOT own_namespace_read
                     AND NOT kubelet_pod_read
                     AND NOT namespace_cleanup) AS "k8s.secret_read"
FROM e
