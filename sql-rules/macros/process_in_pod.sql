-- macro: process_in_pod
-- description: The process runs in a Kubernetes pod Tetragon resolved (its
--    pod name is known): the rules that key on the pod or that only mean
--    Kubernetes workloads.
COALESCE(process.pod.name IS NOT NULL, FALSE)
