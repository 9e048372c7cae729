-- macro: exec_command
-- description: The command of an exec request: the request body's command
--    array joined with spaces, or the request URI (which carries it as
--    command= parameters) when the body is not logged.
COALESCE(NULLIF(array_to_string(json_path_values(request_object, '$.command[*]'), ' '), ''), request_uri)
