-- id: tetragon.package_manager_in_container
-- title: Package manager run in a running container
-- severity: low
-- description: A package manager (apt, apt-get, dpkg, apk, yum, dnf, microdnf,
--    rpm, zypper, pacman, or pip / gem / easy_install installing) was executed
--    in a container. Images should be immutable: installing software at run time
--    is typical of an intruder fetching tools, and drifts the container from its
--    scanned image. Container entrypoints (PID 1, executed as the container
--    started) are ignored.
-- mitre: T1105, T1072
-- source: tetragon
-- tags: attack, execution, drift, runtime
-- author: Vigil
-- references: https://tetragon.io/docs/concepts/events/#process_exec
-- based_on: vigil:package_manager_in_container, mitre:T1105
SELECT
  node_name AS node,
  process.pod.namespace AS namespace,
  process.pod.name AS pod,
  process.pod.container.image.name AS image,
  process.binary AS binary,
  process.arguments AS arguments,
  parent.binary AS parent_binary
FROM tetragon
WHERE event_type = 'process_exec'
  AND process_in_container()
  AND NOT process_is_entrypoint()
  AND (
    in_list(process_basename(process.binary), 'package_manager_binaries')
    OR (in_list(process_basename(process.binary), 'language_package_installers')
        AND regexp_like(COALESCE(process.arguments, ''), '(^|\s)install(\s|$)'))
  )
