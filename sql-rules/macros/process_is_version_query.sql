-- macro: process_is_version_query
-- description: The process was started only to print its version or its
--    usage: its only argument is -V, --version, -h or --help. Given no
--    target (no device, file or module), such a run changes nothing.
COALESCE(
  regexp_like(COALESCE(process.arguments, ''), '^\s*(-V|--version|-h|--help)\s*$'),
  FALSE)
