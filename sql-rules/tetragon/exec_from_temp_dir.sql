-- id: tetragon.exec_from_temp_dir
-- title: Program run from a temporary directory
-- severity: high
-- description: A container process executed a binary located in a world-writable
--    temporary directory (/tmp, /var/tmp, /dev/shm, /run/shm), or such a binary
--    spawned a shell. Droppers and C2 agents (e.g. a Merlin agent built with
--    "go run" into /tmp/go-build...) run from there because it is writable and
--    not part of the image. Outside containers only /dev/shm is reported.
-- mitre: T1059, T1105, T1036
-- source: tetragon
-- tags: attack, execution, drift, runtime
-- author: Vigil
-- references: https://tetragon.io/docs/concepts/events/#process_exec
-- based_on: falco:Execution from /dev/shm, falco:Drop and execute new binary in container
SELECT
  node_name AS node,
  process.pod.namespace AS namespace,
  process.pod.name AS pod,
  process.docker AS container_id,
  process.binary AS binary,
  process.arguments AS arguments,
  parent.binary AS parent_binary,
  parent.arguments AS parent_arguments,
  CASE WHEN process_path_in_temp_dir(process.binary)
       THEN 'binary in temp dir' ELSE 'shell spawned by a temp-dir binary' END AS reason
FROM tetragon
WHERE event_type = 'process_exec'
  AND (
    (process_path_in_temp_dir(process.binary)
     AND (process_in_container() OR glob_match(process.binary, make_array('/dev/shm/*', '/run/shm/*'))))
    OR (process_path_in_temp_dir(parent.binary)
        AND process_is_shell()
        AND process_in_container())
  )
