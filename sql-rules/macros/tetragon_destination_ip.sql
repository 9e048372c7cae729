-- macro: tetragon_destination_ip
-- description: The destination address of a connection: destination_ip of
--    a process_connect event, or the first sock_arg daddr of a kprobe.
COALESCE(destination_ip, json_path_values(args, '$[*].sock_arg.daddr')[1])
