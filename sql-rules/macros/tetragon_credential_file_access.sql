-- macro: tetragon_credential_file_access
-- description: A process touched a credential file: a file kprobe on one
--    of the credential_files (any access), or a file kprobe of a changing
--    function (tetragon_file_write_functions) on one of the account_files
--    (/etc/passwd, /etc/group, /etc/sudoers: reading them is normal); or a
--    process started with a credential file on its command line
--    (credential_file_arguments).
COALESCE(
  (event_type = 'process_kprobe'
   AND (any_in_list(tetragon_file_paths(), 'credential_files')
        OR (in_list(lower(function_name), 'tetragon_file_write_functions')
            AND any_in_list(tetragon_file_paths(), 'account_files'))))
  OR (event_type = 'process_exec'
      AND in_list(process.arguments, 'credential_file_arguments')),
  FALSE)
