-- macro: process_basename
-- description: The last component of a path (/usr/bin/bash gives bash; a
--    name without "/" gives itself), to compare a binary with a list of
--    basenames wherever it is installed.
-- params: path
regexp_replace(path, '^.*/', '')
