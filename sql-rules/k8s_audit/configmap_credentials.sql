-- id: k8s.configmap_credentials
-- title: ConfigMap holding credentials
-- severity: medium
-- description: A ConfigMap was created, updated or patched whose data names a
--    credential, in a key or inside a value such as a properties or .env file
--    (credential_key_names: aws_access_key_id, password, private_key, api_key,
--    access_token, ...), or holds a value shaped like one (an AWS access key id
--    AKIA..., a PEM private key, a GitHub or Slack token). ConfigMaps are not secrets: anyone who can read them (often every
--    workload's service account, and every user with view) reads the
--    credential. It is the misconfiguration Falco calls "Create/Modify
--    Configmap With Private Credentials", and a place attackers look first.
--    Reported whoever writes it, system accounts included. Needs request bodies.
-- mitre: T1552.007, T1552.001
-- source: k8s_audit
-- tags: misconfiguration, credential_access, cis_5.4
-- author: Vigil
-- references: https://kubernetes.io/docs/concepts/configuration/secret/#alternatives-to-secrets
-- based_on: falco:Create/Modify Configmap With Private Credentials
SELECT
  user_info.username AS username,
  verb AS verb,
  object_ref.namespace AS namespace,
  object_name() AS configmap,
  json_object_keys(request_object, 'data') AS keys,
  source_ips[1] AS source_ip
FROM k8s_audit
WHERE object_ref.resource = 'configmaps'
  AND verb IN ('create', 'update', 'patch')
  AND request_succeeded()
  -- a credential's name in a key or anywhere in a value (properties and .env
  -- files are stored whole under one key), or a value shaped like a key
  AND (in_list(lower(json_get_json(request_object, 'data')), 'credential_key_names')
       OR regexp_like(COALESCE(json_get_json(request_object, 'data'), ''),
                      '(AKIA|ASIA)[0-9A-Z]{16}|-----BEGIN ([A-Z]+ )?PRIVATE KEY-----|gh[pousr]_[A-Za-z0-9]{36}|xox[abpr]-[0-9A-Za-z-]{10,}'))
