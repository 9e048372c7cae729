-- macro: grants_write
-- description: The role in the request body has a rule with a write verb:
--    create, update, patch, delete, deletecollection or '*'.
COALESCE(json_path_exists(request_object, '$.rules[?@.verbs[?@ == ''create'' || @ == ''update'' || @ == ''patch'' || @ == ''delete'' || @ == ''deletecollection'' || @ == ''*'']]'), FALSE)
