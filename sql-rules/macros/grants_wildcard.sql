-- macro: grants_wildcard
-- description: The role in the request body has a rule granting every verb
--    or every resource ('*').
COALESCE(json_path_exists(request_object, '$.rules[?@.verbs[?@ == ''*''] || @.resources[?@ == ''*'']]'), FALSE)
