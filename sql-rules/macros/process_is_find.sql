-- macro: process_is_find
-- description: The process's binary is a file-search tool (find_binaries:
--    find), wherever it is installed.
COALESCE(
  in_list(process_basename(process.binary), 'find_binaries'),
  FALSE)
