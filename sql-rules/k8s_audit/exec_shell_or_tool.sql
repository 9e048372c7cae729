-- id: k8s.exec_shell_or_tool
-- title: Shell or download tool run through kubectl exec
-- severity: medium
-- description: An exec request ran a shell (sh, bash, ash, dash, zsh, busybox) or a
--    tool attackers use to pull payloads or pivot (curl, wget, python, perl,
--    kubectl) inside a container, and the request succeeded. Narrower than
--    k8s.pod_exec: it names the interactive or tooling use of exec.
-- mitre: T1609, T1059.004
-- source: k8s_audit
-- tags: attack, execution
-- author: Vigil
-- references: https://attack.mitre.org/techniques/T1609/
-- based_on: sigma:kubernetes_audit_potential_enumeration_activity, sigma:kubernetes_audit_exec_into_container
SELECT
  user_info.username AS username,
  object_ref.namespace AS namespace,
  object_ref.name AS pod,
  exec_command() AS command,
  source_ips[1] AS source_ip,
  user_agent AS user_agent
FROM k8s_audit
WHERE pod_session()
  AND object_ref.subresource = 'exec'
  AND request_succeeded()
  AND regexp_like(
    lower(COALESCE(exec_command(), '')),
    '(^|[=/ ]|%2f)(sh|bash|ash|dash|zsh|busybox|curl|wget|python[0-9.]*|perl|kubectl)(&|$| )')
