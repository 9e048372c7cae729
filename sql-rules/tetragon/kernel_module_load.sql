-- id: tetragon.kernel_module_load
-- title: Kernel module loaded from a container
-- severity: high
-- description: insmod or modprobe (kernel_module_binaries) was executed in a
--    container, or on the node by a process whose parent Tetragon recorded in
--    a container (a process that left its pod's cgroup). A kernel module runs
--    in the node's kernel: loading one from a container (which needs
--    CAP_SYS_MODULE: a privileged pod or an added capability) is a full escape
--    to the host, and a rootkit module hides the attacker's processes, files
--    and connections there. The cap_sys_module column says whether the
--    process's effective capabilities hold CAP_SYS_MODULE (NULL when Tetragon
--    exported no capabilities); a run without it is still reported, as the
--    attempt shows intent. Not reported: a run that only prints the tool's
--    version or usage (its only argument -V, --version, -h or --help), and
--    modprobe only querying (-n / --dry-run / --show, -c / --showconfig,
--    -D / --show-depends, -R / --resolve-alias, --show-modversions,
--    --dump-modversions, --show-exports): none loads a module. modprobe -r
--    (unloading, e.g. a security module) is reported. Reported on purpose:
--    node agents that load modules from their containers (CNI plugins loading
--    netfilter or IPVS modules, GPU driver containers), since the event
--    cannot tell a vetted module from a rootkit; a site excepts those images
--    in exceptions.toml. Not covered: a program calling init_module or
--    finit_module itself without these tools (Falco's rule watches the
--    syscall), rmmod, and module loads by node processes.
-- mitre: T1547.006, T1611, T1014
-- source: tetragon
-- tags: attack, persistence, privilege_escalation, container_escape, runtime
-- author: Vigil
-- references: https://tetragon.io/docs/concepts/events/#process_exec, https://attack.mitre.org/techniques/T1547/006/
-- based_on: falco:Linux Kernel Module Injection Detected
SELECT
  node_name AS node,
  COALESCE(process.pod.namespace, parent.pod.namespace) AS namespace,
  COALESCE(process.pod.name, parent.pod.name) AS pod,
  COALESCE(process.pod.container.image.name, parent.pod.container.image.name) AS image,
  process.binary AS binary,
  process.arguments AS arguments,
  parent.binary AS parent_binary,
  parent.arguments AS parent_arguments,
  process.uid AS uid,
  CASE WHEN json_path_exists(payload, '$.process.cap.effective')
       THEN array_has(json_path_values(payload, '$.process.cap.effective[*]'), 'CAP_SYS_MODULE') END AS cap_sys_module,
  CASE WHEN process_in_container() THEN 'in a container' ELSE 'on the node, parent in a container' END AS location
FROM tetragon
WHERE event_type = 'process_exec'
  AND (process_in_container()
       OR parent.pod.name IS NOT NULL
       OR COALESCE(parent.docker, '') <> '')
  AND in_list(process_basename(process.binary), 'kernel_module_binaries')
  AND NOT process_is_version_query()
  AND NOT (process_basename(process.binary) = 'modprobe'
           AND regexp_like(COALESCE(process.arguments, ''),
             '(^|\s)(-[abcDfhinqrRsvV]*[ncDR][abcDfhinqrRsvV]*|--dry-run|--show|--showconfig|--show-config|--show-depends|--resolve-alias|--show-modversions|--dump-modversions|--show-exports)(\s|$)'))
