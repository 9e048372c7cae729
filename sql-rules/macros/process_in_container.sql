-- macro: process_in_container
-- description: The process runs in a container: Tetragon names its pod,
--    or its container id (a container outside Kubernetes, or one whose pod
--    Tetragon could not resolve yet).
COALESCE(
  process.pod.name IS NOT NULL OR COALESCE(process.docker, '') <> '',
  FALSE)
