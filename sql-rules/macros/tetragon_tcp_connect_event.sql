-- macro: tetragon_tcp_connect_event
-- description: The event is an outgoing TCP connection: a process_connect
--    event (Tetragon's network observability), or a tcp_connect kprobe of a
--    TracingPolicy.
COALESCE(
  event_type = 'process_connect'
  OR (event_type = 'process_kprobe' AND function_name = 'tcp_connect'),
  FALSE)
