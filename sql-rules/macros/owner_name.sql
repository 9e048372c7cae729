-- macro: owner_name
-- description: The name of the object's owner (see owner_kind).
json_get_str(request_object, 'metadata', 'ownerReferences', 0, 'name')
