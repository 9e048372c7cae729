-- id: tetragon.shell_in_container
-- title: Shell started in a container
-- severity: medium
-- description: A shell (sh, bash, ash, dash, zsh, ksh, csh, tcsh, busybox sh)
--    was executed inside a Kubernetes pod or a container. Production containers
--    rarely start shells after boot; a new one usually means kubectl exec, a web
--    shell, or an exploit spawning commands. The container's own entrypoint
--    (PID 1, executed as the container started) and kubelet exec probes are
--    ignored; a PID 1 executed later (an exploited entrypoint calling execve
--    without forking) is reported.
-- mitre: T1059.004, T1609
-- source: tetragon
-- tags: attack, execution, runtime
-- author: Vigil
-- references: https://tetragon.io/docs/concepts/events/#process_exec
-- based_on: falco:Terminal shell in container, falco:Run shell untrusted
SELECT
  node_name AS node,
  process.pod.namespace AS namespace,
  process.pod.name AS pod,
  process.pod.container.name AS container,
  process.pod.container.image.name AS image,
  process.binary AS binary,
  process.arguments AS arguments,
  parent.binary AS parent_binary,
  parent.arguments AS parent_arguments,
  process.uid AS uid
FROM tetragon
WHERE process_in_container()
  AND tetragon_shell_exec()
