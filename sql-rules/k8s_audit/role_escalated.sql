-- id: k8s.role_escalated
-- title: Existing Role or ClusterRole changed to grant exec, node proxy or wildcards
-- severity: high
-- description: An update or patch of an existing Role or ClusterRole left it
--    granting pods/exec or pods/attach, nodes/proxy, or every verb or resource.
--    Widening a role that subjects are already bound to escalates them all at
--    once, without the new binding that k8s.clusterrolebinding_privileged would
--    see; the k8s.role_* rules report roles created that way. Reported whoever
--    makes the request; the only writes not reported are the ones the cluster
--    makes for itself (legitimate_rbac_write: the aggregation controller filling
--    admin, edit and view, the API server's bootstrap policy, a managed
--    platform's labelled add-ons). Needs request bodies (Request audit level).
-- mitre: T1098, T1078.004
-- source: k8s_audit
-- tags: attack, privilege_escalation, persistence, rbac
-- author: Vigil
-- references: https://kubernetes.io/docs/reference/access-authn-authz/rbac/#privilege-escalation-prevention-and-bootstrapping
-- based_on: vigil:role_escalated, falco:ClusterRole With Wildcard Created, falco:ClusterRole With Pod Exec Created
SELECT
  user_info.username AS username,
  verb AS verb,
  object_ref.resource AS resource,
  object_ref.namespace AS namespace,
  object_name() AS role,
  CASE
    WHEN grants_wildcard() THEN 'wildcard'
    WHEN grants_node_proxy() THEN 'nodes/proxy'
    ELSE 'pods/exec or pods/attach'
  END AS grants,
  json_get_json(request_object, 'rules') AS rules,
  source_ips[1] AS source_ip,
  user_agent AS user_agent
FROM k8s_audit
WHERE role_write()
  AND verb IN ('update', 'patch')
  AND (grants_pod_exec() OR grants_node_proxy() OR grants_wildcard())
  AND NOT legitimate_rbac_write()
