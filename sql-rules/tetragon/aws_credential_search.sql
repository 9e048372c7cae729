-- id: tetragon.aws_credential_search
-- title: Search for AWS credentials in a container
-- severity: medium
-- description: A container process searched for or read AWS credentials:
--    grep, egrep, fgrep or rg (grep_binaries) whose arguments name an AWS
--    credential key in any case (aws_access_key_id, aws_secret_access_key,
--    aws_session_token, or AccessKeyId / SecretAccessKey as in the JSON of the
--    instance metadata service and of "aws sts"), or find (find_binaries) or a
--    file printer such as cat, head, tail, less, strings or base64
--    (file_dump_binaries) whose arguments name an .aws/credentials file. Keys
--    found in a pod (in the image, an environment dump, a mounted home
--    directory or node metadata) give the attacker the cloud account beyond
--    the cluster. Kubelet exec probes (the command the pod spec declares) are
--    not reported. Also reported: a script that greps its own configuration
--    for these keys (the arguments cannot tell a check from a hunt); a site
--    excepts such an image in exceptions.toml. Not reported: the aws CLI or an
--    SDK reading the file itself (no new process names it), reads of
--    .aws/config, and processes on the node outside containers
--    (administrators' work; Falco's rule sees both).
-- mitre: T1552.001
-- source: tetragon
-- tags: attack, credential_access, cloud, runtime
-- author: Vigil
-- references: https://tetragon.io/docs/concepts/events/#process_exec, https://attack.mitre.org/techniques/T1552/001/
-- based_on: falco:Find AWS Credentials
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
  AND NOT process_is_exec_probe()
  AND (
    (process_is_grep()
     AND regexp_like(lower(COALESCE(process.arguments, '')),
                     '(aws_access_key_id|aws_secret_access_key|aws_session_token|accesskeyid|secretaccesskey)'))
    OR ((process_is_find() OR in_list(process_basename(process.binary), 'file_dump_binaries'))
        AND strpos(COALESCE(process.arguments, ''), '.aws/credentials') > 0)
  )
