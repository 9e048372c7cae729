-- macro: process_is_grep
-- description: The process's binary is a text-search tool (grep_binaries:
--    grep, egrep, fgrep, rg), wherever it is installed.
COALESCE(
  in_list(process_basename(process.binary), 'grep_binaries'),
  FALSE)
