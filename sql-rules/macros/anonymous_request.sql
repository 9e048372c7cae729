-- macro: anonymous_request
-- description: A request the API server did not authenticate:
--    system:anonymous, or the system:unauthenticated group.
COALESCE(
  in_list(user_info.username, 'anonymous_users')
  OR array_has(COALESCE(user_info.groups, make_array('')), 'system:unauthenticated'),
  FALSE)
