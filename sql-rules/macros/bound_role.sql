-- macro: bound_role
-- description: The role a RoleBinding or ClusterRoleBinding grants: roleRef.name
--    of the request body, or of the response body (a patch may not carry it).
COALESCE(json_get_str(request_object, 'roleRef', 'name'), json_get_str(response_object, 'roleRef', 'name'))
