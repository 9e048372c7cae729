-- id: tetragon.container_escape_nsenter
-- title: Container escape with nsenter / unshare / chroot
-- severity: critical
-- description: A process in a container ran nsenter or unshare, ran chroot into
--    a host mount (/host, /proc/1/root, /rootfs), or was itself started by
--    nsenter. Combined with a privileged or hostPID pod, "nsenter -t 1 -m -u -n
--    -i -p" gives a root shell in the node's namespaces: a full container escape.
-- mitre: T1611
-- source: tetragon
-- tags: attack, privilege_escalation, container_escape, runtime
-- author: Vigil
-- references: https://tetragon.io/docs/concepts/events/#process_exec, https://attack.mitre.org/techniques/T1611/
-- based_on: mitre:T1611, vigil:container_escape_nsenter
SELECT
  node_name AS node,
  process.pod.namespace AS namespace,
  process.pod.name AS pod,
  process.pod.container.image.name AS image,
  process.binary AS binary,
  process.arguments AS arguments,
  parent.binary AS parent_binary,
  parent.arguments AS parent_arguments,
  process.uid AS uid
FROM tetragon
WHERE event_type = 'process_exec'
  AND process_in_container()
  AND (
    process_basename(process.binary) IN ('nsenter', 'unshare')
    OR process_basename(parent.binary) = 'nsenter'
    OR (process_basename(process.binary) = 'chroot'
        AND regexp_like(COALESCE(process.arguments, ''), '^\s*(/host|/proc/1/root|/rootfs|/node)(/|\s|$)'))
  )
