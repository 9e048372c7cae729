-- macro: tetragon_file_paths
-- description: The paths of a kprobe's file arguments, each with its
--    leading "/" (etc/shadow gives /etc/shadow), to compare with lists of
--    absolute paths.
string_to_array(
  regexp_replace(array_to_string(tetragon_file_args(), '|'), '(^|\|)/?', '${1}/', 'g'),
  '|')
