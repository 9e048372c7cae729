-- id: k8s.role_node_proxy
-- title: Role or ClusterRole granting nodes/proxy created
-- severity: high
-- description: A Role or ClusterRole was created that grants nodes/proxy (directly, via nodes/* or via '*'). nodes/proxy reaches the kubelet API of every node through the API server, which allows running commands in any pod while bypassing exec auditing and admission control.
--    Reported whoever makes the request, controller and kube-system accounts
--    included; the only writes not reported are the ones the cluster makes for
--    itself (legitimate_rbac_write: the API server's bootstrap policy, the
--    aggregation controller's aggregated roles, a managed platform's labelled
--    add-on objects). Failed requests are ignored.
-- mitre: T1098, T1611
-- source: k8s_audit
-- tags: attack, privilege_escalation, rbac
-- author: Vigil
-- references: https://kubernetes.io/docs/reference/access-authn-authz/rbac/#role-and-clusterrole
-- based_on: panther:Kubernetes.Role.NodeProxyPermissions
SELECT
  user_info.username AS username,
  object_ref.resource AS resource,
  object_ref.namespace AS namespace,
  object_name() AS role,
  json_get_json(request_object, 'rules') AS rules,
  verb AS verb,
  source_ips[1] AS source_ip
FROM k8s_audit
WHERE role_write()
  AND verb = 'create'
  AND grants_node_proxy()
  AND NOT legitimate_rbac_write()
