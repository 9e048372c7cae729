-- macro: informer_list
-- description: A cluster identity starting or keeping an informer: a list with
--    resourceVersion=0 (served from the watch cache: what client-go informers
--    send, never kubectl) or a watch, from inside the cluster's networks (or
--    with no address recorded). An outside client sending resourceVersion=0 is
--    not this.
COALESCE(
  in_list(user_info.username, 'cluster_identities')
  AND ((verb = 'list' AND regexp_like(COALESCE(request_uri, ''), '[?&]resourceVersion=0(&|$)'))
       OR verb = 'watch')
  AND (source_ips[1] IS NULL OR in_cluster_network()),
  FALSE)
