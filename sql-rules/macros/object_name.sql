-- macro: object_name
-- description: The name of the object a request is about: the objectRef
--    name, or for a create (where the server may generate it) the name in
--    the request or response body.
COALESCE(object_ref.name, json_get_str(request_object, 'metadata', 'name'),
         json_get_str(response_object, 'metadata', 'name'))
