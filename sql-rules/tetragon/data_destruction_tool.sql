-- id: tetragon.data_destruction_tool
-- title: Data destruction tool run in a container
-- severity: high
-- description: shred, mkfs or one of its per-file-system helpers (mkfs.ext4,
--    mkfs.xfs, ...), mke2fs, or wipefs erasing signatures (-a, --all, -o,
--    --offset) was executed in a container (destruction_binaries). shred
--    overwrites files so they cannot be recovered; mkfs and wipefs destroy a
--    disk's or a volume's file system. An attacker does this to destroy data
--    or evidence, or to take a service down (a wiper, or ransom without a
--    backup). Not reported: a run that only prints the tool's version or usage
--    (its only argument -V, --version, -h or --help, no target), and wipefs
--    only listing a device's signatures (no erase option): neither changes
--    anything. Reported on purpose: CSI node plugins and storage operators
--    formatting or zapping volumes (mkfs.ext4 of a newly attached volume,
--    wipefs -a by a Ceph OSD prepare job), since the event cannot tell a volume
--    being provisioned from a disk being destroyed; a site excepts those images
--    in exceptions.toml. Not covered: dd or cat over a device, blkdiscard,
--    rm -rf, and these tools on the node outside containers (node
--    provisioning; Falco's rule sees the node too).
-- mitre: T1485, T1561
-- source: tetragon
-- tags: attack, impact, runtime
-- author: Vigil
-- references: https://tetragon.io/docs/concepts/events/#process_exec, https://attack.mitre.org/techniques/T1485/, https://attack.mitre.org/techniques/T1561/
-- based_on: falco:Remove Bulk Data from Disk
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
  AND in_list(process_basename(process.binary), 'destruction_binaries')
  AND NOT process_is_version_query()
  AND NOT (process_basename(process.binary) = 'wipefs'
           AND NOT regexp_like(COALESCE(process.arguments, ''), '(^|\s)(-[a-zA-Z]*[ao]|--all|--offset)'))
