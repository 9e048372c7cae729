-- macro: grants_pod_exec
-- description: The role in the request body has a rule naming pods/exec,
--    pods/attach, pods/* or * (any verb: get on pods/exec is enough to exec
--    over WebSockets where the AuthorizePodWebsocketUpgradeCreatePermission
--    gate is off, as before Kubernetes 1.30).
COALESCE(json_path_exists(request_object, '$.rules[?@.resources[?@ == ''pods/exec'' || @ == ''pods/attach'' || @ == ''pods/*'' || @ == ''*'']]'), FALSE)
