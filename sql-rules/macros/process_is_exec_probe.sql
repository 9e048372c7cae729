-- macro: process_is_exec_probe
-- description: Tetragon marked the process as a kubelet exec probe: its
--    binary and every argument are those of the container's liveness or
--    readiness exec probe in the pod spec (maybe_exec_probe). Only the
--    probe's own process is marked, not what it starts.
COALESCE(
  json_get_bool(payload, 'process', 'pod', 'container', 'maybe_exec_probe'),
  FALSE)
