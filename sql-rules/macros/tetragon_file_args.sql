-- macro: tetragon_file_args
-- description: The paths of a kprobe's file arguments, as Tetragon writes
--    them (often without the leading "/": etc/shadow).
json_path_values(args, '$[*].file_arg.path')
