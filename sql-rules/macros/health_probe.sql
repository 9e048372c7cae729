-- macro: health_probe
-- description: A health check of the API server itself: a health path
--    (health_check_paths) or a load-balancer or kubelet probe's user agent
--    (health_check_user_agents) on a non-resource URL, or a loopback client
--    asking for no resource (the control-plane host checking its own API
--    server). Anonymous access to a resource is never a probe.
COALESCE(
  object_ref.resource IS NULL
  AND (in_list(request_uri, 'health_check_paths')
       OR in_list(user_agent, 'health_check_user_agents')
       OR cidr_contains(make_array('127.0.0.0/8', '::1/128'), source_ips[1])),
  FALSE)
