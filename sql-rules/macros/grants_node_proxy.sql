-- macro: grants_node_proxy
-- description: The role in the request body has a rule naming nodes/proxy,
--    nodes/* or * (the kubelet API of every node, through the API server).
COALESCE(json_path_exists(request_object, '$.rules[?@.resources[?@ == ''nodes/proxy'' || @ == ''nodes/*'' || @ == ''*'']]'), FALSE)
