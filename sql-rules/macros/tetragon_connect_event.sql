-- macro: tetragon_connect_event
-- description: The event is an outgoing connection of any protocol: a TCP
--    connection (tetragon_tcp_connect_event), or a kprobe on one of the
--    tetragon_socket_connect_functions (__sys_connect,
--    security_socket_connect), which also see UDP and unix-socket
--    connects and give the destination as a sockaddr argument.
COALESCE(
  tetragon_tcp_connect_event()
  OR (event_type = 'process_kprobe' AND in_list(function_name, 'tetragon_socket_connect_functions')),
  FALSE)
