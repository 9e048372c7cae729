-- id: tetragon.private_key_search
-- title: Search for private keys in a container
-- severity: medium
-- description: A container process searched the file system for private keys:
--    grep, egrep, fgrep or rg (grep_binaries) whose arguments contain both
--    "BEGIN" and "PRIVATE" in any case (the PEM header of an RSA, DSA, EC or
--    OpenSSH private key: "BEGIN RSA PRIVATE KEY", 'BEGIN.*PRIVATE'), or find
--    (find_binaries) whose arguments name an SSH key (id_rsa, id_dsa, id_ecdsa,
--    id_ed25519, their .pub files included) or a .pem / .key file. After
--    getting a shell in a pod, an attacker hunts for keys left in the image, in
--    mounted secrets or on host mounts to log in elsewhere or impersonate a
--    service. Kubelet exec probes (the command the pod spec declares) are not
--    reported. Also reported: a script that checks its own key file with grep
--    (the arguments cannot tell a check from a search), and find looking for
--    .pem certificates (public, but named like keys); a site excepts such an
--    image in exceptions.toml. Not seen: a search made without a new process
--    (shell built-ins, a program reading files itself), and processes on the
--    node outside containers (administrators' work; Falco's rule sees both).
-- mitre: T1552.004, T1552.001
-- source: tetragon
-- tags: attack, credential_access, discovery, runtime
-- author: Vigil
-- references: https://tetragon.io/docs/concepts/events/#process_exec, https://attack.mitre.org/techniques/T1552/004/
-- based_on: falco:Search Private Keys or Passwords
SELECT
  node_name AS node,
  process.pod.namespace AS namespace,
  process.pod.name AS pod,
  process.pod.container.image.name AS image,
  process.binary AS binary,
  process.arguments AS arguments,
  parent.binary AS parent_binary,
  parent.arguments AS parent_arguments,
  process.uid AS uid,
  CASE WHEN process_is_grep() THEN 'key content search' ELSE 'key file name search' END AS search
FROM tetragon
WHERE event_type = 'process_exec'
  AND process_in_container()
  AND NOT process_is_exec_probe()
  AND (
    (process_is_grep()
     AND strpos(lower(COALESCE(process.arguments, '')), 'begin') > 0
     AND strpos(lower(COALESCE(process.arguments, '')), 'private') > 0)
    OR (process_is_find()
        AND regexp_like(lower(COALESCE(process.arguments, '')),
                        '(id_rsa|id_dsa|id_ecdsa|id_ed25519|\.pem["'']?(\s|$)|\.key["'']?(\s|$))'))
  )
