-- macro: tetragon_destination_port
-- description: The destination port of a connection: destination_port of
--    a process_connect event, or the dport of a kprobe's first argument.
COALESCE(CAST(destination_port AS BIGINT), json_get_int(args, 0, 'sock_arg', 'dport'))
