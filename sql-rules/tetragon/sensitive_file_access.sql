-- id: tetragon.sensitive_file_access
-- title: Credential file read or modified in a container
-- severity: high
-- description: A file-access kprobe (Tetragon TracingPolicy on read/write/open
--    hooks) shows a container process touching a credential file: writing
--    /etc/passwd, /etc/group or /etc/sudoers (adding a user or a sudo rule),
--    or reading/writing /etc/shadow, /etc/gshadow, the pod's service account
--    token, SSH private keys or kubelet/Kubernetes PKI keys. Also reported: a
--    process started with such a file on its command line (cat
--    /var/run/secrets/.../token). Tetragon reports paths without the leading "/".
-- mitre: T1003.008, T1552.001, T1552.007, T1098
-- source: tetragon
-- tags: attack, credential_access, persistence, runtime
-- author: Vigil
-- references: https://tetragon.io/docs/concepts/tracing-policy/hooks/, https://tetragon.io/docs/use-cases/filename-access/
-- based_on: falco:Read sensitive file untrusted, falco:Search Private Keys or Passwords
SELECT
  node_name AS node,
  event_type AS event_type,
  function_name AS function,
  policy_name AS policy,
  process.pod.namespace AS namespace,
  process.pod.name AS pod,
  process.binary AS binary,
  process.arguments AS arguments,
  tetragon_file_args() AS files
FROM tetragon
WHERE process_in_container()
  AND tetragon_credential_file_access()
