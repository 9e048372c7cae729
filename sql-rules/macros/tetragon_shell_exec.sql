-- macro: tetragon_shell_exec
-- description: A shell was executed (process_exec of one of the
--    shell_binaries) that is neither its container's entrypoint nor a
--    kubelet exec probe: kubectl exec, a web shell, an exploit.
COALESCE(
  event_type = 'process_exec'
  AND process_is_shell()
  AND NOT process_is_entrypoint()
  AND NOT process_is_exec_probe(),
  FALSE)
