-- macro: process_is_shell
-- description: The process's binary is a shell (shell_binaries), wherever
--    it is installed.
COALESCE(
  in_list(process_basename(process.binary), 'shell_binaries'),
  FALSE)
