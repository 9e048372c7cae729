-- macro: anonymous_request
-- description: A request the API server did not authenticate:
--    system:anonymous, or the system:unauthenticated group.
--    A request without groups is not in the group (NULL, made FALSE by
--    the outer COALESCE; a COALESCE of the list itself copied every
--    event's groups at each call).
COALESCE(
  in_list(user_info.username, 'anonymous_users')
  OR array_has(user_info.groups, 'system:unauthenticated'),
  FALSE)
