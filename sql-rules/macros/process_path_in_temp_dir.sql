-- macro: process_path_in_temp_dir
-- description: A path (a binary) lies under a world-writable temporary
--    directory (temp_dir_paths: /tmp, /var/tmp, /dev/shm, /run/shm).
-- params: path
COALESCE(
  in_list(path, 'temp_dir_paths'),
  FALSE)
